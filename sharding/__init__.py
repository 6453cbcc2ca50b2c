"""The Ray jobs of the sharding stage (formats: docs/shards.md).

* :mod:`sharding.shard`          ``dsdocre shard``: DocRED JSON -> verified WebDataset shards
* :mod:`dsdocre.data.manifest`       the manifest, and :func:`dsdocre.data.manifest.verify` for readers
* :mod:`sharding.corpus`         streaming a JSON array / JSON Lines file document by document
* :mod:`sharding.distant_label`  ``dsdocre distant-label``: DS labels from a knowledge base
* :mod:`sharding.fact_join`      ``dsdocre fact-join``: fact -> documents index, document pairs
* :mod:`sharding.entities`       entity keys and name normalization shared by the two above

Ray is imported only inside the functions that need it.
"""
