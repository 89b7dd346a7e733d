"""Interval arithmetic of espo.tools.intervals on hand-made numbers and hand-computed t quantiles."""

import math

import pytest

from espo.tools.intervals import curve_band, mean_interval, paired_interval, t_cdf, t_quantile


def test_t_quantiles_match_closed_forms_and_tables():
    # Tolerances: t_quantile bisects t_cdf (float64, exact series) to 1e-12 relative, so closed forms agree to
    # rel 1e-9 with 1,000x room; printed table values carry 4 decimals, i.e. ±5e-5, so abs 1e-4 (observed ≤ 4.9e-5).
    # df = 1 is the Cauchy distribution: q = tan(π (p - 1/2)).
    assert t_quantile(0.975, 1) == pytest.approx(math.tan(0.475 * math.pi), rel=1e-9)  # 12.7062
    # df = 2: F(t) = 1/2 + t / (2 sqrt(t² + 2)), so q² = 2 a² / (1 - a²) with a = 2p - 1 = 0.95.
    assert t_quantile(0.975, 2) == pytest.approx(math.sqrt(2 * 0.9025 / 0.0975), rel=1e-9)  # 4.3027
    # Printed two-sided 95 % table values.
    for df, q in ((3, 3.1824), (4, 2.7764), (5, 2.5706), (9, 2.2622), (30, 2.0423)):
        assert t_quantile(0.975, df) == pytest.approx(q, abs=1e-4)
    assert t_quantile(0.95, 4) == pytest.approx(2.1318, abs=1e-4)
    assert t_quantile(0.025, 4) == pytest.approx(-2.7764, abs=1e-4)
    # Large df approaches the normal 1.95996.
    assert t_quantile(0.975, 2000) == pytest.approx(1.9612, abs=1e-4)  # 1.961151, to 4 decimals


def test_t_cdf_closed_forms():
    # Float64 series against float64 closed forms: a few ulps (1e-15), far inside approx's default rel 1e-6.
    for df in (1, 2, 3, 6, 7):
        assert t_cdf(0.0, df) == pytest.approx(0.5)
        assert t_cdf(1.3, df) + t_cdf(-1.3, df) == pytest.approx(1.0)
    assert t_cdf(1.0, 1) == pytest.approx(0.75)  # Cauchy: 1/2 + atan(1)/π
    t = 1.5  # df = 4: A = sinθ (1 + cos²θ / 2), θ = atan(t / 2)
    theta = math.atan(t / 2)
    assert t_cdf(t, 4) == pytest.approx(0.5 + 0.5 * math.sin(theta) * (1 + math.cos(theta) ** 2 / 2))
    with pytest.raises(ValueError):
        t_cdf(1.0, 0)
    with pytest.raises(ValueError):
        t_quantile(1.0, 3)


def test_mean_interval_by_hand():
    ci = mean_interval([1.0, 2.0, 3.0])  # mean 2, s = 1, half = t(0.975, 2) / sqrt(3) = 4.3027 / 1.7321
    assert (ci.mean, ci.n) == (2.0, 3)
    # 2.48414 is printed to 5 decimals (±5e-6); abs 1e-4 as for the table values (observed 2e-6).
    assert ci.half_width == pytest.approx(2.48414, abs=1e-4)
    assert ci.low == pytest.approx(2.0 - 2.48414, abs=1e-4)
    assert not ci.excludes_zero()
    assert ci.format(2) == "2.00 ± 2.48"
    single = mean_interval([0.4])
    assert (single.low, single.high, single.half_width, single.format()) == (None, None, None, "0.400")
    assert not single.excludes_zero()
    ninety = mean_interval([1.0, 2.0, 3.0], level=0.90)  # t(0.95, 2) = 2.9200
    assert ninety.half_width == pytest.approx(2.9200 / math.sqrt(3), abs=1e-4)
    with pytest.raises(ValueError):
        mean_interval([])


def test_paired_interval_by_hand():
    values, baseline = [0.50, 0.60, 0.70], [0.40, 0.45, 0.62]
    # differences 0.10, 0.15, 0.08: mean 0.11, s = sqrt((0.01² + 0.04² + 0.03²) / 2) = sqrt(0.0013)
    ci = paired_interval(values, baseline)
    assert ci.mean == pytest.approx(0.11)
    # 4.302653 carries 6 decimals (±5e-7, times 0.02 here); abs 1e-5 leaves the float64 arithmetic nothing to do.
    assert ci.half_width == pytest.approx(4.302653 * math.sqrt(0.0013) / math.sqrt(3), abs=1e-5)  # 0.08957
    assert ci.excludes_zero()
    assert ci.format(signed=True).startswith("+0.110 ± 0.09")
    # Unpaired, the two groups' spreads (s = 0.1 and 0.1136) would swamp the 0.11 difference.
    assert mean_interval(values).half_width > ci.half_width
    with pytest.raises(ValueError):
        paired_interval([1.0], [1.0, 2.0])


def test_curve_band_per_step_and_cut_to_shortest():
    band = curve_band([[0.0, 1.0, 5.0], [2.0, 3.0], [4.0, 5.0, 9.0]])
    assert len(band) == 2
    assert [b.mean for b in band] == [2.0, 3.0]
    assert band[0].half_width == pytest.approx(4.302653 * 2.0 / math.sqrt(3), abs=1e-5)  # ±5e-7·1.2 from T's digits
    assert curve_band([]) == []
