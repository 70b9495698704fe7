"""Entry points: the ``vitreg`` command (:mod:`vitreg.cli.main`) and what it drives."""
