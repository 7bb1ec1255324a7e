"""Drop-ins for the libraries ELMo users already call (docs/switching.md).

* :mod:`.allennlp` — AllenNLP 0.9's ``ElmoEmbedder`` (``allennlp.commands.elmo``);
  SeqVec / bio_embeddings code uses it too.
* :mod:`.simple_elmo` — simple_elmo's ``ElmoModel`` (NLPL models).

Both read models as published (:mod:`.sources`: a pair, a folder, a ZIP) and convert them
once into the user cache (:mod:`.converted`). No torch, no tensorflow.
"""
