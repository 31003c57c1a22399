"""`zoo` itself: bad input ends in one line on stderr and exit status 2."""



def test_errors_in_process_are_one_line_on_stderr(capsys, tmp_path):
    from common import cli

    assert cli.main(["evaluate", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("zoo evaluate: error:") and str(tmp_path) in err[0]
