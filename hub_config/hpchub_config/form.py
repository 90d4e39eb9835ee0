"""The spawn form: a profile menu plus resources whose choices come from the cluster.

Every choice and limit shown here is checked again on the server (options.py); the form
only makes the valid choices easy. Field names are the REST API's option names.
"""

from __future__ import annotations

import json
from html import escape

from .cluster import Partition
from .options import ProfileSpec, default_partition, format_walltime

_SCRIPT = """
<script>
(function () {
  const form = document.getElementById("hpchub-options");
  if (!form) { return; }
  const profile = form.querySelector("#hpchub-profile");
  const partition = form.querySelector("#hpchub-partition");
  const limits = JSON.parse(form.dataset.limits);
  function setLimits() {
    if (!partition) { return; }
    const l = limits[partition.value];
    for (const [name, max] of Object.entries(l)) {
      const input = form.querySelector(`[name="${name}"]`);
      if (input) { input.max = max; }
    }
  }
  function applyProfile() {
    const option = profile.options[profile.selectedIndex];
    for (const name of ["partition", "cores", "memory_gb", "walltime_hours", "gpus"]) {
      const input = form.querySelector(`[name="${name}"]`);
      const value = option.dataset[name];
      if (input && value !== undefined && value !== "") { input.value = value; }
    }
    setLimits();
  }
  profile.addEventListener("change", applyProfile);
  if (partition) { partition.addEventListener("change", setLimits); }
  applyProfile();
})();
</script>
"""


def _attrs(**attributes) -> str:
    return " ".join(f'{name}="{escape(str(value))}"' for name, value in attributes.items())


def _walltime_limit_hours(p: Partition, max_walltime_hours: float) -> float:
    if p.max_walltime_minutes is None:
        return max_walltime_hours
    return round(p.max_walltime_minutes / 60, 2)


def render_form(
    profiles: list[ProfileSpec],
    partitions: dict[str, Partition],
    *,
    allow_custom_resources: bool,
    max_walltime_hours: float,
    accounts: list[str] | None = None,
    selected: dict | None = None,
) -> str:
    """HTML for JupyterHub's spawn page (it wraps this in its own <form>)."""
    selected = selected or {}
    chosen = selected.get("profile") or profiles[0].key
    fallback_partition = default_partition(partitions)
    limits = {
        p.name: {
            "cores": p.max_cores,
            "memory_gb": p.max_memory_mb // 1024,
            "walltime_hours": _walltime_limit_hours(p, max_walltime_hours),
            "gpus": p.max_gpus,
        }
        for p in partitions.values()
    }
    html = [f'<div id="hpchub-options" {_attrs(**{"data-limits": json.dumps(limits)})}>']
    html.append('<div class="mb-3">')
    html.append('<label for="hpchub-profile" class="form-label">Profile</label>')
    html.append('<select id="hpchub-profile" name="profile" class="form-select" autofocus>')
    for p in profiles:
        data = {
            "value": p.key,
            "data-partition": p.partition or fallback_partition,
            "data-cores": p.cores,
            "data-memory_gb": p.memory_gb,
            "data-walltime_hours": p.walltime_hours,
            "data-gpus": p.gpus,
        }
        flag = " selected" if p.key == chosen else ""
        html.append(f"<option {_attrs(**data)}{flag}>{escape(p.display_name)}</option>")
    html.append("</select></div>")

    if allow_custom_resources and partitions:
        any_gpus = any(p.max_gpus for p in partitions.values())
        html.append('<fieldset class="mb-3"><legend class="fs-6">Resources</legend>')
        html.append(
            '<p class="form-text">The profile fills these in; change them within the '
            "limits of the partition.</p>"
        )
        html.append('<label for="hpchub-partition" class="form-label">Partition</label>')
        html.append('<select id="hpchub-partition" name="partition" class="form-select mb-2">')
        for p in partitions.values():
            limit = _walltime_limit_hours(p, max_walltime_hours)
            label = (
                f"{p.name}: up to {p.max_cores} cores, {p.max_memory_mb // 1024} GB, "
                f"{format_walltime(round(limit * 60))}"
                + (f", {p.max_gpus} GPUs" if p.max_gpus else "")
            )
            html.append(f"<option {_attrs(value=p.name)}>{escape(label)}</option>")
        html.append("</select>")
        fields = [
            ("cores", "CPU cores", 1, "1"),
            ("memory_gb", "Memory (GB)", 1, "1"),
            ("walltime_hours", "Walltime (hours)", 0.25, "0.25"),
        ]
        if any_gpus:
            fields.append(("gpus", "GPUs", 0, "1"))
        for name, label, minimum, step in fields:
            html.append(f'<label for="hpchub-{name}" class="form-label">{escape(label)}</label>')
            html.append(
                f'<input type="number" class="form-control mb-2" '
                f"{_attrs(id=f'hpchub-{name}', name=name, min=minimum, step=step)} required>"
            )
        if accounts:
            html.append('<label for="hpchub-account" class="form-label">Slurm account</label>')
            html.append('<select id="hpchub-account" name="account" class="form-select mb-2">')
            for account in accounts:
                html.append(f"<option {_attrs(value=account)}>{escape(account)}</option>")
            html.append("</select>")
        html.append("</fieldset>")
    html.append("</div>")
    html.append(_SCRIPT)
    return "\n".join(html)
