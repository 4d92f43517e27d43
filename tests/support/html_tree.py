"""A small element tree over the stdlib's `html.parser`, for asserting on server-rendered pages
without a browser: it records every tag that is not closed in order (our templates close all
of theirs), and finds elements by tag and attributes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser

VOID_TAGS = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link",
                       "meta", "source", "track", "wbr"})


@dataclass
class Element:
    tag: str
    attrs: dict[str, str | None]
    children: list[Element | str] = field(default_factory=list)

    def iter(self) -> Iterator[Element]:
        """This element and every element below it, in document order."""
        yield self
        for child in self.children:
            if isinstance(child, Element):
                yield from child.iter()

    def find_all(self, tag: str | None = None, **attrs: str | None) -> list[Element]:
        """Elements below this one with `tag` (any if None) whose attributes include `attrs`
        (an attribute name's `_` stands for `-`)."""
        wanted = {name.replace("_", "-"): value for name, value in attrs.items()}
        return [
            element for element in self.iter()
            if element is not self and (tag is None or element.tag == tag)
            and all(name in element.attrs and element.attrs[name] == value
                    for name, value in wanted.items())
        ]

    def find(self, tag: str | None = None, **attrs: str | None) -> Element:
        """The only element `find_all` gives; anything else fails the test."""
        found = self.find_all(tag, **attrs)
        assert len(found) == 1, f"expected one <{tag}> with {attrs}, found {len(found)}"
        return found[0]

    def classes(self) -> set[str]:
        return set((self.attrs.get("class") or "").split())

    def text(self) -> str:
        """The text below this element, whitespace runs collapsed."""
        parts = [child if isinstance(child, str) else child.text() for child in self.children]
        return " ".join("".join(parts).split())


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self.stack = [self.root]
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, dict(attrs))
        self.stack[-1].children.append(element)
        if tag not in VOID_TAGS:
            self.stack.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Element(tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID_TAGS:
            return
        if self.stack[-1].tag != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1].tag}> at {self.getpos()}")
            if all(element.tag != tag for element in self.stack[1:]):
                return
            while self.stack[-1].tag != tag:
                self.stack.pop()
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


@dataclass(frozen=True)
class Document:
    root: Element
    errors: tuple[str, ...]


def parse_html(markup: str) -> Document:
    builder = _TreeBuilder()
    builder.feed(markup)
    builder.close()
    unclosed = [f"<{element.tag}> is never closed" for element in builder.stack[1:]]
    return Document(builder.root, (*builder.errors, *unclosed))
