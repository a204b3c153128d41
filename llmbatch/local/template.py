"""Reading ``template.yaml`` the way CloudFormation would, for the local stack.

The local stack must not keep a second copy of the stack's settings, so it reads queues,
tables, parameters, functions and their event sources from the template and resolves the
intrinsic functions it uses (Ref, GetAtt, Sub, If, Join, Select, Equals, Not, And, Or).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

NO_VALUE = object()


class _CfnLoader(yaml.SafeLoader):
    """SafeLoader that turns ``!Ref x`` into ``{"Ref": "x"}`` and so on."""


def _tag(tag: str) -> Callable[[yaml.Loader, yaml.Node], Any]:
    name = "Fn::GetAtt" if tag == "GetAtt" else ("Ref" if tag == "Ref" else f"Fn::{tag}")

    def construct(loader: yaml.Loader, node: yaml.Node) -> Any:
        if isinstance(node, yaml.ScalarNode):
            value: Any = loader.construct_scalar(node)
            if tag == "GetAtt":
                value = str(value).split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
        return {name: value}

    return construct


for _t in (
    "Ref",
    "GetAtt",
    "Sub",
    "If",
    "Join",
    "Select",
    "Equals",
    "Not",
    "And",
    "Or",
    "Split",
    "FindInMap",
    "Base64",
):
    _CfnLoader.add_constructor(f"!{_t}", _tag(_t))


def load_template(path: Path) -> dict[str, Any]:
    data = yaml.load(path.read_text(), Loader=_CfnLoader)
    if not isinstance(data, dict) or "Resources" not in data:
        raise ValueError(f"{path} is not a CloudFormation template")
    return data


@dataclass
class Resolver:
    """Resolves intrinsic functions against parameters and created resources."""

    template: dict[str, Any]
    parameters: dict[str, str]
    pseudo: dict[str, str]
    #: logical id -> physical id (what Ref gives)
    refs: dict[str, str] = field(default_factory=dict)
    #: logical id -> attribute name -> value (what GetAtt gives)
    attrs: dict[str, dict[str, str]] = field(default_factory=dict)

    def condition(self, name: str) -> bool:
        return bool(self.resolve(self.template.get("Conditions", {})[name]))

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [v for v in (self.resolve(x) for x in value) if v is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            fn = self._functions().get(key)
            if fn is not None:
                return fn(arg)
        return {k: r for k, r in ((k, self.resolve(v)) for k, v in value.items()) if r is not NO_VALUE}

    def _functions(self) -> Mapping[str, Callable[[Any], Any]]:
        return {
            "Ref": self._ref,
            "Fn::GetAtt": lambda a: self.attrs[a[0]][a[1]],
            "Fn::Sub": self._sub,
            "Fn::If": lambda a: self.resolve(a[1] if self.condition(a[0]) else a[2]),
            "Fn::Join": lambda a: str(a[0]).join(str(x) for x in self.resolve(a[1])),
            "Fn::Select": lambda a: self.resolve(a[1])[int(self.resolve(a[0]))],
            "Fn::Equals": lambda a: str(self.resolve(a[0])) == str(self.resolve(a[1])),
            "Fn::Not": lambda a: not self.resolve(a[0]),
            "Fn::And": lambda a: all(self.resolve(x) for x in a),
            "Fn::Or": lambda a: any(self.resolve(x) for x in a),
            "Condition": self.condition,
        }

    def _ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.parameters:
            kind = str(self.template.get("Parameters", {}).get(name, {}).get("Type", "String"))
            if kind == "CommaDelimitedList" or kind.startswith("List<"):  # Ref of a list parameter is a list
                return self.parameters[name].split(",")
            return self.parameters[name]
        if name in self.refs:
            return self.refs[name]
        raise KeyError(f"cannot resolve Ref {name}")

    def _sub(self, arg: Any) -> str:
        text, extra = (arg, {}) if isinstance(arg, str) else (arg[0], self.resolve(arg[1]))

        def replace(m: re.Match[str]) -> str:
            name = m.group(1)
            if name in extra:
                return str(extra[name])
            if "." in name:
                logical, attr = name.split(".", 1)
                return str(self.attrs[logical][attr])
            return str(self._ref(name))

        # ${!Literal} stays in the text as ${Literal}, as CloudFormation writes it.
        return re.sub(r"\$\{([^}!]+)\}", replace, text).replace("${!", "${")


def parameter_values(template: dict[str, Any], overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    values = {name: str(spec.get("Default", "")) for name, spec in template.get("Parameters", {}).items()}
    for name, value in (overrides or {}).items():
        if name not in values:
            raise KeyError(f"template has no parameter {name}")
        values[name] = str(value)
    return values


def dependencies(value: Any) -> set[str]:
    """Logical ids a piece of template refers to."""
    found: set[str] = set()
    if isinstance(value, list):
        for v in value:
            found |= dependencies(v)
    elif isinstance(value, dict):
        for k, v in value.items():
            if k == "Ref" and isinstance(v, str):
                found.add(v)
            elif k == "Fn::GetAtt":
                found.add(v[0])
            elif k == "Fn::Sub":
                text = v if isinstance(v, str) else v[0]
                found |= {m.split(".")[0] for m in re.findall(r"\$\{([^}!]+)\}", text)}
                if not isinstance(v, str):
                    found |= dependencies(v[1])
            else:
                found |= dependencies(v)
    return found


def creation_order(resources: Mapping[str, Any]) -> list[str]:
    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str, stack: tuple[str, ...] = ()) -> None:
        if name in seen:
            return
        if name in stack:
            raise ValueError(f"circular reference through {name}")
        for dep in sorted(dependencies(resources[name]) & set(resources)):
            visit(dep, (*stack, name))
        seen.add(name)
        order.append(name)

    for name in resources:
        visit(name)
    return order


def function_spec(template: dict[str, Any], logical_id: str) -> dict[str, Any]:
    """A function's properties with the template's ``Globals.Function`` merged in."""
    globals_ = template.get("Globals", {}).get("Function", {})
    props = dict(template["Resources"][logical_id]["Properties"])
    merged = {**globals_, **props}
    env = {
        **globals_.get("Environment", {}).get("Variables", {}),
        **props.get("Environment", {}).get("Variables", {}),
    }
    merged["Environment"] = {"Variables": env}
    return merged
