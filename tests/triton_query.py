"""Run in the Triton environment by tests/test_triton_server.py: send texts to a Triton model with NVIDIA's
tritonclient, a few rows per request and the requests at once (so Triton's dynamic batcher merges them),
and print each text's outputs as JSON: ``python triton_query.py URL MODEL OUTPUT[,OUTPUT] < texts.json``."""
import json
import sys

import numpy as np
import tritonclient.http as httpclient

url, model, outputs = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
texts = json.load(sys.stdin)
client = httpclient.InferenceServerClient(url, concurrency=8)
pending = []
for start in range(0, len(texts), 3):
    rows = texts[start:start + 3]
    text = httpclient.InferInput("text", [len(rows), 1], "BYTES")
    text.set_data_from_numpy(np.array([[t.encode("utf-8")] for t in rows], dtype=object))
    pending.append(client.async_infer(model, [text], outputs=[httpclient.InferRequestedOutput(o) for o in outputs]))
answers = []
for request in pending:
    result = request.get_result()
    columns = {o: result.as_numpy(o).reshape(-1).tolist() for o in outputs}
    for i in range(len(columns[outputs[0]])):
        answers.append({o: v[i].decode("utf-8") if isinstance(v[i], bytes) else v[i] for o, v in columns.items()})
client.close()
print(json.dumps(answers, ensure_ascii=False))
