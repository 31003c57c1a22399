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


def test_a_data_error_raised_inside_tf_data_is_one_line(capsys, monkeypatch):
    """A record broken mid-run surfaces from tf.data wrapped in a traceback; zoo prints its one line."""
    import tensorflow as tf

    from common import cli
    from common.cli import pose

    line = "POSE/annot/train.json: entry 3 (a.jpg): image POSE/images/a.jpg: empty (0 bytes)"

    def broken(args):
        def read(_):
            raise cli.errors.DataError(line)

        tf.data.Dataset.range(1).map(lambda i: tf.numpy_function(read, [i], tf.int64)).get_single_element()

    monkeypatch.setattr(pose, "train_pose", broken)
    assert cli.main(["train-pose", "POSE", "RUN"]) == 2
    assert capsys.readouterr().err.strip() == f"zoo train-pose: error: {line}"
