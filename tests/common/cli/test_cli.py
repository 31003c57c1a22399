"""`zoo` itself: bad input ends in one line on stderr and exit status 2."""



def test_errors_in_process_are_one_line_on_stderr(capsys, tmp_path):
    from common import cli

    assert cli.main(["evaluate", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("zoo evaluate: error:") and str(tmp_path) in err[0]


def test_an_option_value_starting_with_a_minus_sign_parses_as_written():
    from common import cli

    args = cli.parse_args(["prepare", "COHORT", "OUT", "--window", "-160,240", "--num-classes", "3"])
    assert (args.window, args.num_classes) == ((-160.0, 240.0), 3)
    assert cli.parse_args(["prepare", "COHORT", "OUT", "--window=-200,250"]).window == (-200.0, 250.0)
