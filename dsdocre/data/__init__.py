"""Data: documents, their encoding with entity markers, and training examples.

- :mod:`dsdocre.data.documents`: the typed DocRED model, streaming reader, validation, rejections;
- :mod:`dsdocre.data.encoding`: tokenization with entity markers (:class:`MarkerTokenizer`);
- :mod:`dsdocre.data.examples`: pair examples, collation and deterministic per-rank batches.

Modules are imported explicitly (``from dsdocre.data.documents import ...``) so that reading
documents never imports torch.
"""
