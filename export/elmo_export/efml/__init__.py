"""ELMoForManyLangs (HIT-SCIR) model directories: reading, mapping onto the bilm-tf layout,
convert (:func:`elmo_export.efml.convert.convert_efml`).

Torch side of the wall: their state dicts are ``torch.save`` files, read only through
:mod:`elmo_export.pytorch.safe_load` (imported when a directory is read; the config,
vocabulary and mapping code imports without torch).
"""
