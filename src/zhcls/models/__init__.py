"""The models layer: the one encoder (`modeling`), the zoo, the checkpoint folder contract, the readers of
other formats (`formats/`, `sources`, `convert`, `cache`, `inspection`) and `pretrained`, which turns
`--model` into a model and tokenizer."""
