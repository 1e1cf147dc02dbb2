"""The lean voxel classifier gives scikit-image's features and scikit-learn's probabilities
to the bit: slab by slab, with closed-form eigenvalues and a compiled forest, on synthetic
and real EM, one and two stages, with and without the mitochondrion channel."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from labelstitch._kernels.voxelforest import hessian_eigenvalues
from labelstitch.plugins import voxelforest
from labelstitch.plugins.classifier import membrane_annotations, reference_probabilities, train_pixel_classifier
from labelstitch.plugins.voxelforest import FilterFeatures, FlatForest, features_at
from labelstitch.synthetic import em_volume


@pytest.fixture(scope="module")
def synthetic():
    return em_volume((24, 40, 40), n_neurites=12, mitochondria=20, return_mitochondria=True, seed=11)


@pytest.mark.parametrize("two_stage", [False, True])
@pytest.mark.parametrize("with_mitochondria", [False, True])
def test_the_lean_predictor_equals_the_reference_to_the_bit_on_synthetic_em(synthetic, two_stage, with_mitochondria,
                                                                             monkeypatch):
    gray, truth, mito = synthetic
    clf = train_pixel_classifier(gray, membrane_annotations(truth, mito if with_mitochondria else None), n_estimators=6,
                                 max_samples=20_000, two_stage=two_stage)
    unseen, _ = em_volume((19, 37, 33), n_neurites=10, seed=12)  # odd sizes: slabs that do not divide the box
    monkeypatch.setattr(voxelforest, "SLAB_VOXELS", 3000)  # many slabs, so their seams are tested
    lean = clf.predict(unseen)
    reference = reference_probabilities(clf, unseen)
    assert lean.shape == reference.shape == unseen.shape + ((2,) if with_mitochondria else ())
    assert lean.dtype == np.float32
    np.testing.assert_array_equal(lean, reference)
    # a range of slices, with the whole box as context, is those slices of the whole answer
    np.testing.assert_array_equal(clf.predict(unseen, z_range=(5, 13)), lean[5:13])


@pytest.mark.parametrize("two_stage", [False, True])
def test_the_lean_predictor_equals_the_reference_to_the_bit_on_gala(shared_data, two_stage):
    train, test = np.load(shared_data / "gala_train.npz"), np.load(shared_data / "gala_test.npz")
    clf = train_pixel_classifier(train["raw"][:24], membrane_annotations(train["gt"][:24]), n_estimators=10, max_samples=40_000,
                                 two_stage=two_stage)
    box = test["raw"][:30]
    np.testing.assert_array_equal(clf.predict(box), reference_probabilities(clf, box))


def test_training_features_are_scikit_images_features_at_the_sampled_voxels(synthetic):
    from skimage.feature import multiscale_basic_features

    gray = synthetic[0]
    sigmas = (0.5, 1.0, 2.0, 4.0)
    full = multiscale_basic_features(gray.astype(np.float32) / 255, sigma_min=0.5, sigma_max=4.0, num_sigma=4)
    rows = np.random.default_rng(0).choice(gray.size, 500, replace=False)
    np.testing.assert_array_equal(features_at(FilterFeatures(gray, sigmas), rows), full.reshape(-1, 20)[rows])


def _symmetric(entries):
    h00, h01, h02, h11, h12, h22 = entries
    return np.array([[h00, h01, h02], [h01, h11, h12], [h02, h12, h22]], np.float32)


_finite = st.floats(-1e3, 1e3, width=32, allow_subnormal=False)


@settings(max_examples=300)
@given(entries=st.lists(_finite, min_size=6, max_size=6),
       kind=st.sampled_from(["any", "diagonal", "repeated", "tiny", "rank one"]))
def test_closed_form_eigenvalues_round_like_lapack_or_say_they_may_not(entries, kind):
    """Where the kernel does not mark a matrix uncertain, its float32 eigenvalues are
    numpy's (LAPACK's) to the bit; near-degenerate matrices are among the examples."""
    e = np.array(entries, np.float32)
    if kind == "diagonal":
        e[[1, 2, 4]] = 0
    elif kind == "repeated":  # two equal eigenvalues, rotated
        e = np.array([e[0], 0, 0, e[0], 0, e[3]], np.float32)
        rot = np.linalg.qr(np.array(entries[:6] + entries[:3], np.float64).reshape(3, 3) + 3 * np.eye(3))[0]
        m = (rot @ _symmetric(e).astype(np.float64) @ rot.T).astype(np.float32)
        e = np.array([m[0, 0], m[0, 1], m[0, 2], m[1, 1], m[1, 2], m[2, 2]], np.float32)
    elif kind == "tiny":
        e = e * np.float32(1e-6)
    elif kind == "rank one":
        v = e[:3]
        m = np.outer(v, v).astype(np.float32)
        e = np.array([m[0, 0], m[0, 1], m[0, 2], m[1, 1], m[1, 2], m[2, 2]], np.float32)
    out = np.zeros((1, 3), np.float32)
    uncertain = np.zeros(1, bool)
    hessian_eigenvalues(*[np.array([v], np.float32) for v in e], out, 0, uncertain)
    reference = np.linalg.eigvalsh(_symmetric(e)[None])[0, ::-1]
    if not uncertain[0]:
        np.testing.assert_array_equal(out[0], reference)
    else:  # uncertain ones are still close
        np.testing.assert_allclose(out[0], reference, rtol=1e-5, atol=1e-6 * float(np.abs(e).sum()))


def test_uncertain_eigenvalues_are_rare_on_real_hessians(synthetic):
    smooth = FilterFeatures(synthetic[0], (0.5, 1.0, 2.0, 4.0)).smoothed[1]
    gradient = np.gradient(smooth)
    entries = [np.ascontiguousarray(np.gradient(gradient[a], axis=b)).ravel() for a, b in voxelforest._PAIRS]
    uncertain = np.zeros(smooth.size, bool)
    hessian_eigenvalues(*entries, np.empty((smooth.size, 3), np.float32), 0, uncertain)
    assert 0 <= uncertain.mean() < 0.01


@settings(max_examples=40)
@given(seed=st.integers(0, 2**16), classes=st.sampled_from([(1, 2), (1, 2, 3)]),
       data=arrays(np.float32, (300, 4), elements=st.floats(-4, 4, width=32)))
def test_the_compiled_forest_is_scikit_learns_predict_proba_to_the_bit(seed, classes, data):
    """Also where a value equals a threshold or its float32 neighbour: the stored float32
    threshold sends every float32 value the way scikit-learn's float64 one does."""
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(seed)
    y = rng.choice(classes, size=data.shape[0])
    y[: len(classes)] = classes  # every class present
    model = RandomForestClassifier(n_estimators=5, min_samples_leaf=2, random_state=seed).fit(data, y)
    thresholds = np.concatenate([e.tree_.threshold[e.tree_.children_left >= 0] for e in model.estimators_])
    probe = data.copy()
    if thresholds.size:
        at = rng.choice(thresholds, size=probe.shape).astype(np.float32)
        nudge = rng.integers(-1, 2, size=probe.shape)
        at = np.where(nudge > 0, np.nextafter(at, np.float32(np.inf)), np.where(nudge < 0, np.nextafter(at, np.float32(-np.inf)), at))
        probe = np.where(rng.random(probe.shape) < 0.5, at, probe).astype(np.float32)
    wanted = [1, 3] if 3 in classes else [1]
    columns = [int(np.flatnonzero(model.classes_ == c)[0]) for c in wanted]
    flat = FlatForest.from_forest(model, wanted)
    np.testing.assert_array_equal(flat.probabilities(np.ascontiguousarray(probe)),
                                  model.predict_proba(probe)[:, columns].astype(np.float32))


def test_a_walk_stops_when_all_eight_neighbours_are_at_leaves_whatever_their_depths():
    """The compiled walk stops a group of eight rows only once none moved: rows whose
    paths differ in depth by far (a leaf at the root's child beside a chain of 40 nodes)
    and a tree that is one leaf still give scikit-learn's answers, in every place of a group."""
    from sklearn.ensemble import RandomForestClassifier

    x = np.arange(64, dtype=np.float32)[:, None]
    y = np.where(x[:, 0] < 24, 1, 2) ^ (x[:, 0].astype(int) % 2 * (x[:, 0] >= 24))  # one leaf below 24, a chain above
    model = RandomForestClassifier(n_estimators=3, bootstrap=False, random_state=0).fit(x, y)
    pure = RandomForestClassifier(n_estimators=2, random_state=0).fit(x, np.ones(64, int) * 5)  # each tree one leaf
    depths = [e.tree_.max_depth for e in model.estimators_]
    assert min(depths) >= 20
    rng = np.random.default_rng(0)
    for rows in (x, x[rng.permutation(64)], x[:13]):
        rows = np.ascontiguousarray(rows)
        np.testing.assert_array_equal(FlatForest.from_forest(model, [1]).probabilities(rows),
                                      model.predict_proba(rows)[:, :1].astype(np.float32))
        np.testing.assert_array_equal(FlatForest.from_forest(pure, [5]).probabilities(rows), np.ones((rows.shape[0], 1)))


def test_a_forest_beyond_the_node_records_is_refused_in_one_line():
    from sklearn.ensemble import RandomForestClassifier

    x = np.random.default_rng(0).random((40, 300), dtype=np.float32)
    model = RandomForestClassifier(n_estimators=2, random_state=0).fit(x, np.arange(40) % 2)
    with pytest.raises(ValueError, match=r"300 features does not fit .*at most 256 features .* fewer scales"):
        FlatForest.from_forest(model, [1])


@settings(max_examples=60, deadline=None)
@given(shape=st.tuples(st.integers(1, 7), st.integers(1, 7), st.integers(1, 7)), seed=st.integers(0, 2**16),
       kind=st.sampled_from(["uniform", "wide range", "sparse"]), data=st.data())
def test_the_sobel_kernel_is_scikit_images_sobel_to_the_bit(shape, seed, kind, data):
    """Also where float64 sums round (values 30 orders of magnitude apart), at the volume's
    edges (one-voxel sides included) and for slabs of slices inside it."""
    from skimage import filters

    from labelstitch._kernels.voxelforest import sobel_magnitude

    rng = np.random.default_rng(seed)
    volume = rng.random(shape, dtype=np.float32)
    if kind == "wide range":
        volume = (volume * np.float32(10.0) ** rng.integers(-30, 3, size=shape)).astype(np.float32)
    elif kind == "sparse":
        volume = np.where(rng.random(shape) < 0.7, np.float32(0), volume)
    z0 = data.draw(st.integers(0, shape[0] - 1))
    z1 = data.draw(st.integers(z0 + 1, shape[0]))
    around = volume[max(z0 - 1, 0):min(z1 + 1, shape[0])]
    out = np.empty((z1 - z0, *shape[1:]), np.float32)
    sobel_magnitude(np.pad(around, ((int(z0 == 0), int(z1 == shape[0])), (1, 1), (1, 1)), mode="symmetric"), out)
    np.testing.assert_array_equal(out.view(np.uint32), filters.sobel(volume)[z0:z1].view(np.uint32))


def test_training_on_more_cores_grows_the_same_forest(synthetic):
    """Forests are fitted on every core the thread cap allows: the trees, the lean answers
    and scikit-learn's own ``predict_proba`` are those of a fit on one core."""
    from labelstitch._threads import set_threads

    gray, truth, _ = synthetic
    models = []
    for threads in (1, 2):
        set_threads(threads)
        try:
            models.append(train_pixel_classifier(gray, membrane_annotations(truth), n_estimators=6, max_samples=4000))
        finally:
            set_threads(None)
    one, two = models
    for a, b in zip(one.model.estimators_, two.model.estimators_):
        np.testing.assert_array_equal(a.tree_.threshold, b.tree_.threshold)
    np.testing.assert_array_equal(one.predict(gray), two.predict(gray))
    np.testing.assert_array_equal(reference_probabilities(one, gray), reference_probabilities(two, gray))
