from trvae_scvi._cli import main


def test_demo_prints_table_and_saves(tmp_path, capsys):
    output = tmp_path / "demo_model"
    assert main(["demo", "--max-epochs", "2", "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    assert "Holding out the 87 stimulated NK cells" in printed
    assert "calibrate_predictor:" in printed and "expected top-100-DEG R²" in printed
    rows = ("trVAE (default)", "trVAE (calibrated)", "trVAE transfer", "mean shift", "control")
    for row in rows:
        assert row in printed
    assert (output / "model.pt").is_file() and (output / "adata.h5ad").is_file()
    # A second run refuses to replace the saved model without --overwrite.
    assert main(["demo", "--max-epochs", "1", "--output", str(output), "--no-calibrate"]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_demo_rejects_unknown_cell_type(tmp_path, capsys):
    assert main(["demo", "--cell-type", "Neuron", "--output", str(tmp_path / "m")]) == 2
    assert "choose one of" in capsys.readouterr().err
