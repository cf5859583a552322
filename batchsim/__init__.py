"""batchsim command line: profile, simulate, validate, sweep, report."""

__version__ = "0.1.0"
