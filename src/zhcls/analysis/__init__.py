"""The analysis layer (`zhcls analyze`, `zhcls augment`, `zhcls explain`): data quality and explanations.

`dirty` ranks training rows whose label is likely wrong, `sparse` finds dev examples the training data
barely supports and what to add for them, `augment` writes new training rows, `explain` attributes a
prediction to words and to training examples. Each works from the dataset folder alone (the TF-IDF
baseline is the fast model) and takes a trained checkpoint's view with ``params_path``.
"""
