"""Tests of slac.heads (a package, so that its conftest is imported as heads.conftest and does not
shadow tests/conftest.py, which other test modules import as `conftest`)."""
