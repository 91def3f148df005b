"""The README's configuration reference is the one the model generates."""

from pathlib import Path

from scaling.reference import reference_table

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_reference_is_current() -> None:
    text = README.read_text()
    start = text.index("<!-- reference:start -->\n") + len("<!-- reference:start -->\n")
    end = text.index("<!-- reference:end -->")
    assert text[start:end] == reference_table(), "regenerate: python -m scaling.reference README.md"
