"""Python-backend models that `zhcls export --triton_repo` copies into a Triton model repository as
``model.py``. They run inside Triton's Python backend (``triton_python_backend_utils`` is Triton's),
with zhcls installed in the container for its tokenizer and softmax."""
