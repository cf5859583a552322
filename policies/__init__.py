"""Batching policies: pure decision objects shared by the simulator and the real engine."""

from batchsim.policies.base import Plan, Policy, StepEvents, StepShape, Wait
from batchsim.policies.registry import available, get_policy, make_config, register

__all__ = [
    "Plan",
    "Policy",
    "StepEvents",
    "StepShape",
    "Wait",
    "available",
    "get_policy",
    "make_config",
    "register",
]
