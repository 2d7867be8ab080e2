"""Who may connect, and with which credentials Sluice logs in for them.

The wire exchanges (SCRAM, md5, cleartext) live with each engine's sessions;
they ask an `Authenticator` what to check against. `StaticUsers` answers from
the users a configuration file declares; the control plane adds IAM tokens and
Secrets Manager as other authenticators behind the same interface.
"""
