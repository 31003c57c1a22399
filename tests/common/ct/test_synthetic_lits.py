import numpy as np
import SimpleITK as sitk

from common.ct import synthetic, synthetic_lits, volumes


def test_synthetic_tumours_lie_inside_the_liver():
    image, organs = synthetic.make_phantom(5, size=(48, 48, 8), spacing=(7.0, 7.0, 10.0))
    liver = sitk.GetArrayFromImage(organs) == 1
    hu, label = synthetic_lits._paint_tumours(image, liver, np.random.default_rng(0), count=2)
    assert (label == 2).any() and not ((label > 0) & ~liver).any()
    assert hu[label == 2].mean() < sitk.GetArrayFromImage(image)[label == 1].mean()


def test_lits_cohort_reads_as_lits_with_only_the_liver_and_tumours_labelled(tmp_path):
    ids = synthetic_lits.write_lits_cohort(tmp_path, num_cases=2, seed=1, size=(48, 48, 8), spacing=(7.0, 7.0, 10.0))
    assert ids == [case.case_id for case in volumes.find_cases(tmp_path)] == ["volume-0", "volume-1"]
    image, organs = synthetic.make_phantom(synthetic._case_plan(1, 0, (7.0, 7.0, 10.0))[0], (48, 48, 8),
                                           (7.0, 7.0, 10.0))
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "segmentation-0.nii")))
    liver = sitk.GetArrayFromImage(organs) == 1
    assert set(np.unique(label)) <= {0, 1, 2} and np.array_equal(label > 0, liver)  # other organs unlabelled
