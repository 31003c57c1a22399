"""The argument types the subcommands share: bad text is an argparse error naming what was expected."""

import argparse

import pytest

from common.cli import options


def test_numbers_parse_exactly_the_named_count():
    assert options.numbers(int, "X,Y,Z")("128,128,32") == (128, 128, 32)
    assert options.hu_window("-160,240") == (-160.0, 240.0)
    for bad in ("128,128", "a,b,c", "1,2,3,4"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected X,Y,Z"):
            options.numbers(int, "X,Y,Z")(bad)


def test_lists_json_and_metric_names():
    assert options.int_list("0,10,20") == [0, 10, 20]
    assert options.case_list("case_000,,case_001") == ["case_000", "case_001"]
    assert options.json_object('{"heads": 4}') == {"heads": 4}
    assert options.metric_names("dice,hd95") == ("dice", "hd95")
    assert options.fractions("0.2,1") == (0.2, 1.0)
    for parse, bad, message in [(options.int_list, "0,x", "integers"), (options.json_object, "[1]", "JSON object"),
                                (options.json_object, "{", "not JSON"), (options.metric_names, "dice,iouu", "metrics"),
                                (options.fractions, "a", "fractions")]:
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            parse(bad)
