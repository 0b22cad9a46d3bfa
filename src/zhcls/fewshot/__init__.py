"""Few labels or none, on a pretrained sentence encoder: `zhcls embed` (`embed`), `zhcls zeroshot`
(`zeroshot`), `zhcls fewshot` (`train`: SetFit's recipe on the one loop) and `zhcls select` (`select`: which
texts to label first)."""
