"""Data: documents, their encoding with entity markers, and training examples.

- :mod:`dsdocre.data.documents`: the typed DocRED model (:class:`Document`, mentions, labels);
- :mod:`dsdocre.data.validation`: every problem of a raw document;
- :mod:`dsdocre.data.reader`: the streaming reader, the validating loaders, rejections;
- :mod:`dsdocre.data.encoding`: tokenization with entity markers (:class:`MarkerTokenizer`);
- :mod:`dsdocre.data.examples`: pair examples, collation and deterministic per-rank batches.

Modules are imported explicitly (``from dsdocre.data.reader import ...``) so that reading
documents never imports torch.
"""
