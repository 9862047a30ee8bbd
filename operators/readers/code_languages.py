"""Which programming language a file is in, from its name alone (and a shebang for extensionless scripts).

The names follow GitHub linguist's (``C++``, ``C#``, ``Shell`` ...), so they match The Stack's
``language`` column. Only the common languages are known: a file whose name maps to none (images, data,
plain text) has no language, and the ``source_tree`` reader counts it instead of reading it.

Ambiguous extensions take the common reading: ``.h`` is C (C++ headers mostly say ``.hpp``/``.hh``),
``.m`` is Objective-C (not MATLAB), ``.pl`` is Perl (not Prolog), ``.r`` is R.
"""

from __future__ import annotations

import posixpath
import re

#: language -> lower-case file extensions (with the dot)
EXTENSIONS: dict[str, tuple[str, ...]] = {
    "Python": (".py", ".pyi", ".pyw", ".pyx", ".pxd"),
    "C": (".c", ".h"),
    "C++": (".cc", ".cpp", ".cxx", ".c++", ".hh", ".hpp", ".hxx", ".h++", ".ipp", ".inl", ".tcc"),
    "C#": (".cs", ".csx"),
    "Java": (".java",),
    "JavaScript": (".js", ".mjs", ".cjs", ".jsx"),
    "TypeScript": (".ts", ".tsx", ".mts", ".cts"),
    "Go": (".go",),
    "Rust": (".rs",),
    "Ruby": (".rb", ".rake", ".gemspec", ".ru"),
    "PHP": (".php", ".phtml"),
    "Swift": (".swift",),
    "Kotlin": (".kt", ".kts"),
    "Scala": (".scala", ".sc"),
    "Objective-C": (".m",),
    "Objective-C++": (".mm",),
    "Shell": (".sh", ".bash", ".zsh", ".ksh"),
    "PowerShell": (".ps1", ".psm1", ".psd1"),
    "Batchfile": (".bat", ".cmd"),
    "Perl": (".pl", ".pm", ".t"),
    "Lua": (".lua",),
    "R": (".r",),
    "Julia": (".jl",),
    "Haskell": (".hs", ".lhs"),
    "OCaml": (".ml", ".mli"),
    "Elixir": (".ex", ".exs"),
    "Erlang": (".erl", ".hrl"),
    "Clojure": (".clj", ".cljs", ".cljc"),
    "Dart": (".dart",),
    "Groovy": (".groovy", ".gradle"),
    "Fortran": (".f90", ".f95", ".f03", ".f08", ".f", ".for"),
    "Zig": (".zig",),
    "SQL": (".sql",),
    "Protocol Buffer": (".proto",),
    "CMake": (".cmake",),
    "Makefile": (".mk", ".mak"),
    "Dockerfile": (".dockerfile",),
    "Starlark": (".bzl", ".star"),
    "Vue": (".vue",),
    "HTML": (".html", ".htm", ".xhtml"),
    "CSS": (".css",),
    "SCSS": (".scss",),
    "Less": (".less",),
    "XML": (".xml", ".xsd", ".xsl", ".xslt"),
    "JSON": (".json",),
    "YAML": (".yml", ".yaml"),
    "TOML": (".toml",),
    "Markdown": (".md", ".markdown"),
    "reStructuredText": (".rst",),
    "TeX": (".tex", ".sty", ".cls"),
}

#: well-known file names (exact, case-sensitive) -> language; these win over the extension
FILENAMES: dict[str, str] = {
    "Makefile": "Makefile", "makefile": "Makefile", "GNUmakefile": "Makefile",
    "Dockerfile": "Dockerfile", "Containerfile": "Dockerfile",
    "CMakeLists.txt": "CMake",
    "Rakefile": "Ruby", "Gemfile": "Ruby", "Vagrantfile": "Ruby", "Podfile": "Ruby", "Guardfile": "Ruby",
    "Jenkinsfile": "Groovy",
    "BUILD": "Starlark", "BUILD.bazel": "Starlark", "WORKSPACE": "Starlark", "WORKSPACE.bazel": "Starlark",
    "Tiltfile": "Starlark",
    ".bashrc": "Shell", ".bash_profile": "Shell", ".zshrc": "Shell", ".profile": "Shell",
    "Pipfile": "TOML", "Cargo.lock": "TOML", "poetry.lock": "TOML", "uv.lock": "TOML", "pdm.lock": "TOML",
    "Gopkg.lock": "TOML",
    "Pipfile.lock": "JSON", "composer.lock": "JSON", "flake.lock": "JSON", "deno.lock": "JSON",
    "yarn.lock": "YAML",
}

#: interpreter in a ``#!`` line -> language (for scripts without an extension)
INTERPRETERS: dict[str, str] = {
    "python": "Python", "sh": "Shell", "bash": "Shell", "zsh": "Shell", "dash": "Shell", "ksh": "Shell",
    "node": "JavaScript", "deno": "TypeScript", "ruby": "Ruby", "perl": "Perl", "php": "PHP", "lua": "Lua",
    "rscript": "R", "julia": "Julia", "pwsh": "PowerShell", "groovy": "Groovy", "make": "Makefile",
}

BY_EXTENSION: dict[str, str] = {ext: lang for lang, exts in EXTENSIONS.items() for ext in exts}
#: every language this module can name
LANGUAGES: tuple[str, ...] = tuple(sorted({*EXTENSIONS, *FILENAMES.values()}))
_BY_LOWER = {lang.lower(): lang for lang in LANGUAGES}

_SHEBANG = re.compile(rb"^#![ \t]*(\S+)(?:[ \t]+(\S+))?")
_VERSION_SUFFIX = re.compile(r"[0-9.]+$")


def canonical(name: str) -> str | None:
    """The language's canonical spelling (``python`` -> ``Python``), or None when it is unknown."""
    return _BY_LOWER.get(name.strip().lower())


def language_of(path: str) -> str | None:
    """The language of a file from its path (``/``-separated), or None when the name says nothing."""
    base = posixpath.basename(path)
    if base in FILENAMES:
        return FILENAMES[base]
    if base.startswith("Dockerfile.") or base.endswith(".Dockerfile"):
        return "Dockerfile"
    ext = posixpath.splitext(base)[1].lower()
    return BY_EXTENSION.get(ext)


def needs_shebang(path: str) -> bool:
    """Whether the language can only come from the content: a name with no extension and no known name."""
    base = posixpath.basename(path)
    return "." not in base.lstrip(".") and base not in FILENAMES


def language_from_shebang(head: bytes) -> str | None:
    """The language a ``#!`` first line names (``#!/usr/bin/env python3`` -> Python), else None."""
    m = _SHEBANG.match(head)
    if not m:
        return None
    prog = posixpath.basename(m.group(1).decode("utf-8", "replace"))
    if prog == "env" and m.group(2):
        arg = m.group(2).decode("utf-8", "replace")
        if arg.startswith("-"):  # env -S ...: not worth parsing
            return None
        prog = posixpath.basename(arg)
    return INTERPRETERS.get(_VERSION_SUFFIX.sub("", prog.lower()) or prog.lower())


def first_lines(text: str, n: int) -> str:
    """The first ``n`` lines of ``text`` (where generated-file markers are looked for)."""
    end = -1
    for _ in range(n):
        end = text.find("\n", end + 1)
        if end < 0:
            return text
    return text[:end]
