"""Filters that check the inventory's hub settings with the hub's own schema, on the controller.

The schema is hub_config/hpchub_config/settings.py. It needs only the standard library and
PyYAML (which Ansible itself needs), so it is loaded here by path: the controller needs no
JupyterHub. Every limit, pattern and choice the hub applies at start is applied here first,
and each problem names the Ansible variable.
"""

from __future__ import annotations

import importlib.util
import os
import sys

from ansible.errors import AnsibleFilterError

_loaded = {}


def _schema(schema_file):
    path = os.path.realpath(schema_file)
    if path not in _loaded:
        if not os.path.isfile(path):
            raise AnsibleFilterError(f"the hub settings schema {path} does not exist")
        spec = importlib.util.spec_from_file_location("hpchub_preflight_settings", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
        spec.loader.exec_module(module)
        _loaded[path] = module
    return _loaded[path]


def setting_variables(schema_file):
    """The Ansible variables that set hub settings."""
    schema = _schema(schema_file)
    return [
        var
        for section in schema.SECTIONS
        for field in schema.dataclasses.fields(section.cls)
        if (var := schema.ansible_variable(section, field))
    ]


def settings_problems(variables, schema_file, host):
    """One message per value the hub would refuse, naming the variable and the host."""
    problems = _schema(schema_file).check_ansible_values(dict(variables))
    return [f"{problem} (host {host})." for problem in problems]


class FilterModule:
    def filters(self):
        return {
            "hpchub_setting_variables": setting_variables,
            "hpchub_settings_problems": settings_problems,
        }
