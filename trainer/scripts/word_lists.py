"""Word lists for `feelings export --trim-words`: the most frequent words of many languages.

A vocabulary trimmed to English reviews (`--trim-vocab`) spells other languages with single
characters; these lists keep the pieces of their most frequent words too. The words come from
wordfreq (PyPI, code Apache-2.0; its word data CC-BY-SA 4.0, so the lists are made here, not
kept in the repository):

    python3 -m venv /tmp/wordfreq && /tmp/wordfreq/bin/pip install wordfreq==3.1.1
    /tmp/wordfreq/bin/python trainer/scripts/word_lists.py --top 2000 --out words.txt

One word a line, the languages one after the other. By default every language wordfreq has a
"large" list for (21 in 3.1.1).
"""

import argparse
import sys

import wordfreq


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the file to write, one word a line")
    parser.add_argument("--top", type=int, default=2000, help="words per language (2000)")
    parser.add_argument(
        "--languages",
        help="comma-separated language codes (default: wordfreq's 'large' lists)",
    )
    args = parser.parse_args()
    if args.top < 1:
        parser.error("--top must be at least 1")
    available = set(wordfreq.available_languages(wordlist="best"))
    if args.languages:
        languages = [code.strip() for code in args.languages.split(",") if code.strip()]
    else:
        languages = sorted(wordfreq.available_languages(wordlist="large"))
    unknown = [code for code in languages if code not in available]
    if unknown:
        parser.error(f"wordfreq has no list for {', '.join(unknown)}; it has {', '.join(sorted(available))}")
    count = 0
    with open(args.out, "w", encoding="utf-8") as out:
        for code in languages:
            for word in wordfreq.top_n_list(code, args.top):
                out.write(word + "\n")
                count += 1
    print(f"{count} words of {len(languages)} languages ({', '.join(languages)}) to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
