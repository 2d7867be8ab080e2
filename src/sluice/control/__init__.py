"""The control plane: an AWS-compatible API (IAM, STS, EC2, Secrets Manager, RDS, Lambda,
CloudWatch Logs) whose objects become running proxies and functions."""
