//! The unbiased pass@k estimator of Chen et al. (2021): with n samples of which c are
//! correct, pass@k = 1 − C(n−c, k) / C(n, k), computed as a running product so large n
//! never overflows.

/// pass@k for `n` samples with `correct` of them right; `None` when k is 0 or exceeds n
/// (the estimator is undefined there).
pub fn pass_at_k(n: usize, correct: usize, k: usize) -> Option<f64> {
    if k == 0 || k > n || correct > n {
        return None;
    }
    if n - correct < k {
        return Some(1.0);
    }
    // C(n−c, k) / C(n, k) = Π_{i = n−c+1}^{n} (1 − k / i)
    let miss: f64 = ((n - correct + 1)..=n)
        .map(|i| 1.0 - k as f64 / i as f64)
        .product();
    Some(1.0 - miss)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binomial(n: u64, k: u64) -> f64 {
        if k > n {
            return 0.0;
        }
        (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
    }

    #[test]
    fn matches_the_binomial_formula_for_n_10() {
        // Hand values: n = 10, c = 3 → pass@1 = 0.3, pass@5 = 1 − C(7,5)/C(10,5)
        // = 1 − 21/252 = 11/12, pass@10 = 1.
        assert!((pass_at_k(10, 3, 1).unwrap() - 0.3).abs() < 1e-12);
        assert!((pass_at_k(10, 3, 5).unwrap() - 11.0 / 12.0).abs() < 1e-12);
        assert_eq!(pass_at_k(10, 3, 10), Some(1.0));
        for c in 0..=10u64 {
            for k in [1u64, 5, 10] {
                let want = 1.0 - binomial(10 - c, k) / binomial(10, k);
                let got = pass_at_k(10, c as usize, k as usize).unwrap();
                assert!((got - want).abs() < 1e-12, "c={c} k={k}: {got} vs {want}");
            }
            // pass@1 is the plain success rate.
            assert!((pass_at_k(10, c as usize, 1).unwrap() - c as f64 / 10.0).abs() < 1e-12);
        }
        assert_eq!(pass_at_k(10, 0, 10), Some(0.0));
        assert_eq!(pass_at_k(10, 1, 10), Some(1.0));
        assert_eq!(pass_at_k(10, 6, 5), Some(1.0));
    }

    #[test]
    fn undefined_cases() {
        assert_eq!(pass_at_k(10, 3, 0), None);
        assert_eq!(pass_at_k(10, 3, 11), None);
        assert_eq!(pass_at_k(10, 11, 1), None);
    }
}
