"""zhcls: Chinese text classification with small pretrained Transformer encoders."""
__version__ = "0.1.0"
