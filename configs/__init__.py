"""The default configs (YAML stage configs, DeepSpeed JSON), installed with the package as ``dsdocre.configs``."""
