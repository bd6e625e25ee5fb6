"""Inspecting models: parameter, FLOPs and memory breakdowns (attention maps and plots later)."""

from .summary import (GROUPS, activation_bytes_per_layer, flops_per_token, format_report, human_bytes,
                      human_count, human_flops, matmul_params, memory_estimate, param_breakdown)

__all__ = ["param_breakdown", "flops_per_token", "memory_estimate", "format_report", "matmul_params",
           "activation_bytes_per_layer", "human_count", "human_bytes", "human_flops", "GROUPS"]
