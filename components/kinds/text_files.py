"""Text files as people have them: bytes in some encoding, e-mails (.eml) with headers and MIME parts.
Used by the text kind (components/kinds/text.py) and by components/sample_data.py."""

from __future__ import annotations

import email
import email.errors
import email.header
import email.message
import email.policy
import html.parser
import re
import unicodedata

from components.table_files import bom_encoding


class Undecodable(Exception):
    """Bytes that are not text in the given (or any detected) encoding."""


def decode(content: bytes, encoding: str | None = None) -> str:
    """Bytes -> str. With an encoding, exactly that (UnicodeDecodeError becomes Undecodable); without, the
    encoding its byte-order mark names, else UTF-8, else charset-normalizer's best guess (its detection, the
    one `requests` uses; cp1252 where other code pages score the same). Raises Undecodable when nothing
    decodes it as text."""
    if encoding is not None:
        try:
            return content.decode(encoding)
        except UnicodeDecodeError as exc:
            raise Undecodable(f"not {encoding} text (byte {exc.start})") from None
    bom = bom_encoding(content[:4])
    try:
        return content.decode(bom)
    except UnicodeDecodeError:
        pass
    from charset_normalizer import from_bytes

    matches = from_bytes(content)
    best = matches.best()
    if best is None or b"\x00" in content:  # NUL bytes: a binary file, whatever a detector guesses
        raise Undecodable("not text in any encoding detected (a binary file?)")
    # Code pages that score the same come out in the detector's own order, which put cp1250 before cp1252:
    # French or German text in cp1252, the most common legacy encoding, read "crème" as "crčme". Among
    # equally good guesses, cp1252 wins.
    tied = [m for m in matches if (m.chaos, m.coherence) == (best.chaos, best.coherence)]
    return str(next((m for m in tied if m.encoding == "cp1252"), best))


def normalised(text: str, max_chars: int | None = None) -> str:
    """Unicode NFC (é typed as one code point or as e + accent are one text), stripped, cut to max_chars."""
    text = unicodedata.normalize("NFC", text).strip()
    return text if max_chars is None else text[:max_chars]


def whitespace_key(text: str) -> str:
    """The text with every run of whitespace made one space: what two copies differing only in spacing share."""
    return " ".join(text.split())


def email_text(content: bytes) -> str:
    """An e-mail (RFC 5322 bytes, a .eml file) as the text the text kind classifies: its subject, a blank
    line, its body (message_text); the other headers are dropped."""
    subject, body, _ = message_text(content)
    return f"{subject}\n\n{body}".strip()


def message_text(raw: bytes) -> tuple[str, str, str]:
    """(subject, body, how) of a raw e-mail: the decoded Subject ("" if none) and the body (module docstring),
    and where the body came from: "text/plain", "text/html" or "no text"; with " (compat32)" added when the
    default policy failed on the message, or "raw" when compat32 failed too (then the Subject line and what
    follows the first blank line, as UTF-8). Never raises."""
    for policy in (email.policy.default, email.policy.compat32):
        try:
            message = email.message_from_bytes(raw, policy=policy)
            subject = _subject(message)
            body, how = _parts_text(message, "text/plain"), "text/plain"
            if not body.strip():
                body = _html_text(_parts_text(message, "text/html"))
                how = "text/html" if body else "no text"
            return (
                _tidy(subject, one_line=True),
                _tidy(body),
                how + ("" if policy is email.policy.default else " (compat32)"),
            )
        except Exception:  # noqa: BLE001  # a malformed message is read the next, simpler way
            continue
    head, _, body = raw.decode("utf-8", "replace").replace("\r\n", "\n").partition("\n\n")
    found = re.search(r"^Subject:(.*)$", head, re.MULTILINE | re.IGNORECASE)
    return _tidy(found.group(1) if found else "", one_line=True), _tidy(body), "raw"


def _subject(message: email.message.Message) -> str:
    """The Subject header decoded: its =?charset?...?= words in their charsets, or, when it holds raw 8-bit
    bytes (against RFC 5322; the email package would give U+FFFD), those in the first charset its parts declare."""
    value = next((value for name, value in message.raw_items() if name.lower() == "subject"), "")
    raw = str(value).encode("ascii", "surrogateescape")  # the parser keeps 8-bit bytes as surrogates
    if not raw.isascii():
        return _decode(raw, next((charset for charset in message.get_charsets() if charset), None))
    try:
        words = email.header.decode_header(raw.decode())
    except email.errors.HeaderParseError:  # a word whose base64 is broken
        return raw.decode()
    return "".join(_decode(word, charset) if isinstance(word, bytes) else word for word, charset in words)


def _parts_text(message: email.message.Message, content_type: str) -> str:
    """The message's parts of content_type (attachments and forwarded messages included), decoded, joined;
    an HTML part that declares no charset in the mail (or us-ascii) is read in the one its <meta> names."""
    texts = []
    for part in message.walk():
        kind = part.get_content_type()
        kind = "text/plain" if " " in kind else kind  # "TEXT/PLAIN charset=X", invalid: RFC 2045 says text/plain
        payload = part.get_payload(decode=True) if kind == content_type else None
        if isinstance(payload, bytes):
            charset = part.get_content_charset()
            meta = re.search(rb"<meta[^>]*charset\s*=\s*[\"']?([-\w]+)", payload, re.IGNORECASE)
            if kind == "text/html" and charset in (None, "us-ascii") and meta:  # <meta charset=...> in the HTML
                charset = meta.group(1).decode().lower()
            texts.append(_decode(payload, charset))
    return "\n\n".join(texts)


def _decode(payload: bytes, charset: str | None) -> str:
    """payload in its declared charset (errors replaced); when none is declared, Python does not know it or it is
    us-ascii (often a lie in 2002 mail), as UTF-8 when that fits, else as windows-1252."""
    if charset not in (None, "us-ascii", "ascii"):
        try:
            return payload.decode(charset, "replace")
        except LookupError:
            pass
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        return payload.decode("cp1252", "replace")


def _tidy(text: str, one_line: bool = False) -> str:
    """text with \\n line ends (one_line: each run of white space one space), outer white space
    stripped, no NULs, and U+FFFD for any lone surrogate (undecodable header bytes), which UTF-8 cannot hold."""
    text = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    text = re.sub(r"\r\n?", "\n", text).replace("\x00", "")
    return " ".join(text.split()) if one_line else text.strip()


class _HtmlText(html.parser.HTMLParser):
    """Text of an HTML document: no tags, comments, scripts or styles; entities unescaped; a line per block,
    a space between table cells, nothing for inline tags (V<b>i</b>agra stays one word)."""

    BLOCKS = {"br", "p", "div", "tr", "li", "table", "h1", "h2", "h3", "h4", "h5", "h6", "title", "blockquote", "hr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.pieces: list[str] = []
        self.hidden = 0  # inside <script> or <style>

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in ("script", "style"):
            self.hidden += 1
        self.pieces.append("\n" if tag in self.BLOCKS else " " if tag in ("td", "th") else "")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self.hidden = max(0, self.hidden - 1)
        self.pieces.append("\n" if tag in self.BLOCKS else " " if tag in ("td", "th") else "")

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.pieces.append(data)


def _html_text(markup: str) -> str:
    """markup as text (_HtmlText), each run of white space one newline if it has one, else one space."""
    parser = _HtmlText()
    parser.feed(markup)
    parser.close()
    text = "".join(parser.pieces)
    return "\n".join(" ".join(line.split()) for line in re.split(r"\s*\n\s*", text)).strip()
