"""Configuration: YAML files in, frozen validated values out (see ``loader.load_config``)."""
