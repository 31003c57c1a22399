"""The studies' convergence rule: the validation loss flat over the last fifth of epochs, checked per unit."""

import pytest

from common.train import convergence

FALLING = [1.0 - 0.05 * epoch for epoch in range(15)]  # still falling 0.05 an epoch: 0.35 -> 0.3 at the end
FLAT = [1.0, 0.7, 0.6, 0.55, 0.52, 0.51, 0.505, 0.503, 0.502, 0.5015, 0.501, 0.5008, 0.5007, 0.5006, 0.5005]
RISING = FLAT[:10] + [0.51, 0.52, 0.53, 0.54, 0.55]  # overfitting: no improvement left


@pytest.mark.parametrize("losses, change, converged", [
    (FALLING, -0.1 / 0.35, False),  # the line through the last 3 epochs (a fifth of 15): 0.4 -> 0.3, mean 0.35
    (FLAT, -0.0002 / 0.5006, True),
    (RISING, 0.02 / 0.54, True),
])
def test_the_rule_on_a_loss_curve(losses, change, converged, tmp_path):
    assert convergence.change_over_last_fifth(losses) == pytest.approx(change)
    history = tmp_path / "history.csv"
    history.write_text("epoch,loss,val_loss\n" + "".join(f"{e},{v + 0.1},{v}\n" for e, v in enumerate(losses)))
    assert convergence.check(history) == {"epochs": 15, "change": pytest.approx(change), "converged": converged}


def test_what_cannot_be_checked_is_said(tmp_path):
    for name, text in {"no_val": "epoch,loss\n0,1\n1,0.9\n2,0.8\n", "short": "epoch,loss,val_loss\n0,1,1\n1,1,0.9\n",
                       "gap": "epoch,loss,val_loss\n0,1,1\n1,1,\n2,1,0.9\n"}.items():
        (tmp_path / f"{name}.csv").write_text(text)
    histories = {"missing": tmp_path / "none.csv", **{n: tmp_path / f"{n}.csv" for n in ("no_val", "short", "gap")}}
    falling = tmp_path / "falling.csv"
    falling.write_text("epoch,val_loss\n" + "".join(f"{e},{v}\n" for e, v in enumerate(FALLING)))
    arm = convergence.summary({**histories, "fold_1": falling})
    assert arm["unchecked"] == ["missing", "no_val", "short", "gap"] and arm["unconverged"] == ["fold_1"]
    assert convergence.describe(arm) == ("0 of 5 units converged; NOT converged: fold_1 (-28.6%); unchecked (no "
                                         "val_loss, or under 3 epochs): missing, no_val, short, gap")
    assert convergence.beside_mean(arm) == "  [1 unit(s) not converged; 4 unit(s) unchecked]"
    assert convergence.beside_mean(convergence.summary({})) == ""
    with pytest.raises(ValueError, match="at least 3 epochs"):
        convergence.change_over_last_fifth([1.0, 0.5])
