"""The one error type for bad data: a ValueError, so callers catching ValueError see it too."""

import pytest

from common import cli, errors


def test_data_error_is_a_value_error_the_cli_prints_in_one_line(capsys, tmp_path):
    assert issubclass(errors.DataError, ValueError)
    with pytest.raises(ValueError, match="scan.nii: truncated"):
        raise errors.DataError("scan.nii: truncated")
    assert cli.main(["evaluate", str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
