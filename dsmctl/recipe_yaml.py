"""Recipe YAML from outside, read as data: bounded alias expansion and nesting depth, no duplicate keys, only
plain values (mappings, lists, strings, numbers, booleans, null), integers within int64, finite floats.
Every refusal is a RecipeError naming the dotted key (dsmctl/recipe.py re-exports it)."""

import yaml


class RecipeError(ValueError):
    pass


MAX_RECIPE_BYTES = 1 << 20  # recipes are a few kB
MAX_YAML_NODES = 100_000  # values after alias expansion (the largest shipped recipe has about 100)
MAX_YAML_DEPTH = 64  # nesting levels
INT_LIMIT = 2 ** 63  # every integer fits an int64
FLOAT_LIMIT = 1e30  # every float: finite and of magnitude at most this (float32 tops out at 3.4e38)


def show(value, width=60):
    """repr(value), shortened for a one-line message (a 400-digit integer, a huge list): the one truncating helper
    for values echoed in messages (cli.py applies `shorten` to any overlong word of a message as a last resort)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10 ** 15:
        digits = str(abs(value))
        return f"{'-' if value < 0 else ''}{digits[:4]}...{digits[-4:]} ({len(digits)} digits)"
    return shorten(repr(value), width)


def shorten(text, width=60):
    """text itself when at most `width` characters, else its start and end with its length between them:
    '1,1,1...(40,001 characters)...,1,1,1'."""
    text = str(text)
    if len(text) <= width:
        return text
    keep = max(width - 34, 8)
    return f"{text[:keep]}...({len(text):,} characters)...{text[-8:]}"


class _Loader(yaml.SafeLoader):
    """SafeLoader whose composer stops at MAX_YAML_DEPTH levels (it recurses once per level)."""

    depth = 0

    def compose_node(self, parent, index):
        self.depth += 1
        try:
            if self.depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark
                raise RecipeError(f"nested too deep: more than {MAX_YAML_DEPTH} levels (line {mark.line + 1})")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _measure(node, path, depth, memo):
    """(expanded size, height) of a YAML node graph without expanding it; refuses duplicate keys, recursive
    aliases, too many values after alias expansion and too deep an expansion."""
    key = id(node)
    if key in memo:
        if memo[key] is None:
            raise RecipeError(f"{path or 'recipe'}: a recursive alias (*name inside its own &name)")
        size, height = memo[key]
    else:
        memo[key] = None
        size, height = 1, 0
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for k, v in node.value:
                name = str(k.value) if isinstance(k, yaml.ScalarNode) else "?"
                if isinstance(k, yaml.ScalarNode) and k.tag != "tag:yaml.org,2002:merge":
                    if name in seen:
                        raise RecipeError(f"{path + '.' if path else ''}{name}: duplicate key (line "
                                          f"{k.start_mark.line + 1}); each key may appear once")
                    seen.add(name)
                for child in (k, v):
                    s, h = _measure(child, f"{path}.{name}" if path else name, depth + 1, memo)
                    size, height = size + s, max(height, h + 1)
        elif isinstance(node, yaml.SequenceNode):
            for child in node.value:
                s, h = _measure(child, path, depth + 1, memo)
                size, height = size + s, max(height, h + 1)
        memo[key] = (size, height)
    if size > MAX_YAML_NODES:
        raise RecipeError(f"{path or 'recipe'}: alias expansion too large: {show(size)} values after expanding "
                          f"&anchors and *aliases, expected at most {MAX_YAML_NODES:,}")
    if depth + height > MAX_YAML_DEPTH:
        raise RecipeError(f"{path or 'recipe'}: nested too deep after alias expansion: more than "
                          f"{MAX_YAML_DEPTH} levels")
    return size, height


def _plain(value, path):
    """Refuse what is not plain data (dates, binary, sets), naming the dotted key."""
    if isinstance(value, dict):
        for k, v in value.items():
            _plain(k, path)
            _plain(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for v in value:
            _plain(v, path)
    elif not (value is None or isinstance(value, (str, int, float, bool))):
        kinds = {"date": "a date", "datetime": "a date and time", "bytes": "binary data (!!binary)"}
        kind = kinds.get(type(value).__name__, f"a {type(value).__name__}")
        shown = value.isoformat() if hasattr(value, "isoformat") else show(value)
        raise RecipeError(f"{path or 'recipe'}: expected a number, string, list or mapping, got {kind} "
                          f"({shown}); quote it if you mean the text")


def read_yaml(text, where=""):
    """Parse YAML text into plain data, bounded (see the module docstring); raises RecipeError."""
    loader = None
    try:
        loader = _Loader(text)  # its reader refuses control characters (a NUL byte) at once
        node = loader.get_single_node()
        if node is None:
            return None
        _measure(node, "", 0, {})
        data = loader.construct_document(node)
    except RecipeError as e:
        raise RecipeError(f"{where}{e}") from None
    except yaml.reader.ReaderError as e:
        raise RecipeError(f"{where}not valid YAML: character #x{e.character:04x} at offset {e.position} "
                          f"(control characters such as NUL are not allowed); expected plain text") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark else ""
        problem = getattr(e, "problem", None)
        raise RecipeError(f"{where}not valid YAML{at}{': ' + problem if problem else ''}") from None
    finally:
        if loader is not None:
            loader.dispose()
    try:
        _plain(data, "")
    except RecipeError as e:
        raise RecipeError(f"{where}{e}") from None
    return data

