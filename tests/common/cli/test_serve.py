"""`zoo export`: a version folder and the model server config."""



def test_export_command_writes_a_version_and_the_server_config(zoo, keras_file, tmp_path):
    done = zoo("export", keras_file, tmp_path / "serving", "--server-base-path", "/models/tiny")
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "serving" / "tiny" / "1" / "saved_model.pb").exists()
    assert 'base_path: "/models/tiny"' in (tmp_path / "serving" / "models.config").read_text(encoding="utf-8")
