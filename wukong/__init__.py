"""Wukong: a Kubernetes operator for VMs that explains every reconcile."""

__version__ = "0.1.0"
