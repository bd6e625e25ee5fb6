"""Inspecting models: parameter, FLOPs and memory breakdowns (``summary``); attention maps captured
from the attention the model runs, with per-head entropy and distance (``attention``); masks and
position ids of real training examples as the model receives them (``masks``); labelled texts'
sentence embeddings in 2-D (``embeddings``); their PNG and HTML pictures (``pictures``, for
`tfamily viz`). ``attention.generation_attention`` serves the playground's attention view."""

from .summary import (GROUPS, activation_bytes_per_layer, flops_per_token, format_report, human_bytes,
                      human_count, human_flops, matmul_params, memory_estimate, param_breakdown)

__all__ = ["param_breakdown", "flops_per_token", "memory_estimate", "format_report", "matmul_params",
           "activation_bytes_per_layer", "human_count", "human_bytes", "human_flops", "GROUPS"]
