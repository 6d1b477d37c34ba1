"""What the linen and NNX conversions share: the rule lookup by class and the leaf renames."""

# A Flax leaf name -> (PyTorch's leaf name, whether the array is transposed between the two):
# `nn.Dense`/`flaxseq.basic.Linear` kernels `[in, out]` are PyTorch's `weight [out, in]`,
# `nn.Embed` tables and `nn.LayerNorm` scales are `weight` as they are. Every other leaf
# (the recurrent layers' `weight_ih_l0`, `bias`, a twin's own `weight`) keeps its name.
LEAF_RULES = {"kernel": ("weight", True), "embedding": ("weight", False), "scale": ("weight", False)}


def torch_name(flax_path: tuple[str, ...], ndim: int | None = None) -> tuple[str, bool]:
    """A Flax parameter path -> (PyTorch's state_dict key, transposed?).

    `ndim`, when known, is the leaf's rank: a transposed leaf must be a matrix (a convolution's
    kernel has another layout, which no rule here knows).
    """
    *prefix, leaf = (str(part) for part in flax_path)
    leaf, transposed = LEAF_RULES.get(leaf, (leaf, False))
    name = ".".join([*prefix, leaf])
    if transposed and ndim is not None and ndim != 2:
        raise ValueError(
            f"{'/'.join(map(str, flax_path))}: a kernel converts to {name} by a transpose, which needs a "
            f"matrix [in, out]; got a {ndim}-D kernel (no rule converts it)"
        )
    return name, transposed


def within(path: str, convert, *args):
    """`convert(*args)` for the submodule at `path` (an attribute, or a Sequential's index): a
    refusal inside it names where (`at encoder.1: no conversion rule for ...`)."""
    try:
        return convert(*args)
    except (TypeError, ValueError) as error:
        if type(error) not in (TypeError, ValueError):
            raise
        text = str(error)
        raise type(error)(f"at {path}.{text[3:]}" if text.startswith("at ") else f"at {path}: {text}") from None


def replace_or_add(rules: list, rule, pair) -> None:
    """Put `rule` in `rules` in place of the rule for the same pair of classes (`pair(rule)`),
    or last; no other rule changes (see `find`)."""
    for index, known in enumerate(rules):
        if pair(known) == pair(rule):
            rules[index] = rule
            return
    rules.append(rule)


def find(rules: list, module, side, register_name: str, *, latest: bool):
    """The rule in `rules` whose class on `module`'s side (`side(rule)`) is `type(module)` or its
    nearest base class; `TypeError` naming the known ones and `register_name` otherwise. Of
    several rules for that class, the one registered last with `latest` (a PyTorch module: a
    rule registered for a torch class takes over its conversion), the first without (a twin:
    a rule added for another torch class, a subclass say, does not change what `to_torch`
    builds from flaxseq's own classes).

    A subclass that defines its own call (`forward`, `__call__`) computes something its base's
    rule does not know: it is refused (`TypeError`), not converted as its base."""
    mro = type(module).__mro__
    ordered = list(reversed(rules)) if latest else rules
    for depth, cls in enumerate(mro):
        for rule in ordered:
            if side(rule) is cls:
                _check_same_call(mro[:depth], cls, register_name)
                return rule
    known = ", ".join(sorted(r.torch_type.__name__ for r in rules))
    raise TypeError(
        f"no conversion rule for {type(module).__module__}.{type(module).__name__}; "
        f"register one with {register_name} (known: {known})"
    )


def _check_same_call(subclasses: tuple, base: type, register_name: str) -> None:
    """`subclasses` (the module's class and its bases below `base`) must not define a call of
    their own, `forward` or `__call__`, or the twin of `base` would compute something else."""
    for cls in subclasses:
        own = [name for name in ("forward", "__call__") if name in vars(cls)]
        if own:
            raise TypeError(
                f"{cls.__module__}.{cls.__qualname__} subclasses {base.__module__}.{base.__qualname__} and "
                f"defines its own {own[0]}: the twin of {base.__qualname__} would compute {base.__qualname__}'s, "
                f"not its; register a rule for it with {register_name}, or load its state_dict into a twin "
                "of your own (parity.from_state_dict)"
            )
