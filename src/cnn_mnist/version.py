"""The package's version, written once: pyproject.toml reads it, and every module that states it
(the CLI's --version, the run record, the report, the service, exported files) imports it from
here, the bottom layer, rather than from the package, which imports everything."""

__version__ = "0.1.0"
