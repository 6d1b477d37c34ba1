"""Finding a conversion rule by class, for the linen and the NNX rule tables alike."""


def find(rules: list, module, types, register_name: str):
    """The first rule in `rules` one of whose classes (`types(rule)`) is `type(module)` or its
    nearest base class; `TypeError` naming the known ones and `register_name` otherwise."""
    for cls in type(module).__mro__:
        for rule in rules:
            if cls in types(rule):
                return rule
    known = ", ".join(sorted(r.torch_type.__name__ for r in rules))
    raise TypeError(
        f"no conversion rule for {type(module).__module__}.{type(module).__name__}; "
        f"register one with {register_name} (known: {known})"
    )
