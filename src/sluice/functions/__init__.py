"""Lambda execution environments: the runtime loop inside each (bootstrap.py), the parent's half
of it (environment.py), warm environments per function (runner.py), deployment packages and
the functions' logs. The Lambda API that drives them is `sluice.control.services.lambda_`."""
