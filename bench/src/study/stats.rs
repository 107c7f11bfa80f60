//! The paper's statistics: mean and standard deviation over N runs, and a
//! two-sample t-test at the 95% level (Youseff et al. section 3). Welch's test
//! (unequal variances, Welch–Satterthwaite degrees of freedom) is the one the
//! study reports; Student's pooled-variance test is computed alongside. The
//! t distribution is statrs' [`StudentsT`], not a table.

use statrs::distribution::{ContinuousCDF, StudentsT};

/// Mean, sample standard deviation (n - 1) and count of a set of runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Moments {
    /// Runs (NaNs left out).
    pub n: usize,
    /// Arithmetic mean.
    pub mean: f64,
    /// Sample standard deviation (divisor n - 1); 0 for a single run.
    pub sd: f64,
}

/// Mean and sample standard deviation of `values`, ignoring NaNs; `None` if
/// nothing is left.
pub fn moments(values: &[f64]) -> Option<Moments> {
    let v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    let n = v.len();
    let mean = v.iter().sum::<f64>() / n as f64;
    let sd = if n > 1 {
        (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
    } else {
        0.0
    };
    Some(Moments { n, mean, sd })
}

/// The outcome of a two-sample t-test of `a` against `b`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TTest {
    /// t = (mean(a) - mean(b)) / standard error of the difference. Positive when
    /// `a` is larger; infinite when both samples are constant and differ.
    pub t: f64,
    /// Degrees of freedom (Welch–Satterthwaite, or n_a + n_b - 2 for Student).
    pub df: f64,
    /// Two-sided p-value.
    pub p: f64,
}

impl TTest {
    /// Whether the difference is significant at the 95% level (p < 0.05).
    pub fn significant(&self) -> bool {
        self.p < 0.05
    }
}

fn two_sided_p(t: f64, df: f64) -> f64 {
    if t.is_infinite() {
        return 0.0;
    }
    if t == 0.0 {
        return 1.0;
    }
    match StudentsT::new(0.0, 1.0, df) {
        Ok(dist) => (2.0 * (1.0 - dist.cdf(t.abs()))).clamp(0.0, 1.0),
        Err(_) => f64::NAN,
    }
}

/// Both samples constant: no variance to test against.
fn degenerate(a: &Moments, b: &Moments, df: f64) -> TTest {
    if a.mean == b.mean {
        TTest { t: 0.0, df, p: 1.0 }
    } else {
        TTest {
            t: if a.mean > b.mean {
                f64::INFINITY
            } else {
                f64::NEG_INFINITY
            },
            df,
            p: 0.0,
        }
    }
}

/// Welch's two-sample t-test (variances not assumed equal). `None` when either
/// sample has fewer than two runs.
pub fn welch(a: &Moments, b: &Moments) -> Option<TTest> {
    if a.n < 2 || b.n < 2 {
        return None;
    }
    let (na, nb) = (a.n as f64, b.n as f64);
    let (va, vb) = (a.sd * a.sd / na, b.sd * b.sd / nb);
    let se2 = va + vb;
    if se2 == 0.0 {
        return Some(degenerate(a, b, na + nb - 2.0));
    }
    let t = (a.mean - b.mean) / se2.sqrt();
    let df = se2 * se2 / (va * va / (na - 1.0) + vb * vb / (nb - 1.0));
    Some(TTest {
        t,
        df,
        p: two_sided_p(t, df),
    })
}

/// Student's two-sample t-test with a pooled variance. `None` when either
/// sample has fewer than two runs.
pub fn student(a: &Moments, b: &Moments) -> Option<TTest> {
    if a.n < 2 || b.n < 2 {
        return None;
    }
    let (na, nb) = (a.n as f64, b.n as f64);
    let df = na + nb - 2.0;
    let pooled = ((na - 1.0) * a.sd * a.sd + (nb - 1.0) * b.sd * b.sd) / df;
    let se2 = pooled * (1.0 / na + 1.0 / nb);
    if se2 == 0.0 {
        return Some(degenerate(a, b, df));
    }
    let t = (a.mean - b.mean) / se2.sqrt();
    Some(TTest {
        t,
        df,
        p: two_sided_p(t, df),
    })
}

/// The two-sided 95% critical value of the t distribution with `df` degrees of
/// freedom (|t| above it is significant).
pub fn critical_95(df: f64) -> f64 {
    StudentsT::new(0.0, 1.0, df).map_or(f64::NAN, |d| d.inverse_cdf(0.975))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Reference values from SciPy 1.17.1 (numpy 2.4.6):
    //   from scipy import stats
    //   a=[10.1, 9.8, 10.3, 10.0, 9.9, 10.2]; b=[9.5, 9.9, 9.4, 9.7, 9.6, 9.8, 9.3]
    //   stats.ttest_ind(a, b, equal_var=False)
    //     -> statistic 4.024922359499618, pvalue 0.0020015969761498875, df 10.993485342019543
    //   stats.ttest_ind(a, b, equal_var=True)
    //     -> statistic 3.9770049091417077, pvalue 0.0021699083721685363, df 11.0
    //   c=[101.0, 99.5, 100.4, 98.9, 100.8]; d=[100.2, 101.1, 99.0, 100.6, 100.1, 99.7, 101.4, 98.8]
    //   stats.ttest_ind(c, d, equal_var=False)
    //     -> statistic 0.014522804212595624, pvalue 0.9887334176135991, df 8.894589161499871
    //   numpy.std(a, ddof=1) -> 0.18708286933869686
    //   stats.t.ppf(0.975, 5) -> 2.5705818356363146; stats.t.ppf(0.975, 98) -> 1.9844674545084815
    const A: [f64; 6] = [10.1, 9.8, 10.3, 10.0, 9.9, 10.2];
    const B: [f64; 7] = [9.5, 9.9, 9.4, 9.7, 9.6, 9.8, 9.3];
    const C: [f64; 5] = [101.0, 99.5, 100.4, 98.9, 100.8];
    const D: [f64; 8] = [100.2, 101.1, 99.0, 100.6, 100.1, 99.7, 101.4, 98.8];

    fn close(x: f64, want: f64, tol: f64) {
        assert!(
            (x - want).abs() <= tol * want.abs().max(1e-300),
            "{x} is not {want} (relative tolerance {tol})"
        );
    }

    #[test]
    fn moments_match_numpy() {
        let m = moments(&A).unwrap();
        assert_eq!(m.n, 6);
        close(m.mean, 10.05, 1e-12);
        close(m.sd, 0.18708286933869686, 1e-12);
        let one = moments(&[3.0, f64::NAN]).unwrap();
        assert_eq!((one.n, one.mean, one.sd), (1, 3.0, 0.0));
        assert_eq!(moments(&[f64::NAN]), None);
    }

    #[test]
    fn welch_matches_scipy() {
        let t = welch(&moments(&A).unwrap(), &moments(&B).unwrap()).unwrap();
        close(t.t, 4.024922359499618, 1e-10);
        close(t.df, 10.993485342019543, 1e-10);
        close(t.p, 0.0020015969761498875, 1e-6);
        assert!(t.significant());
        // The sign follows the order of the samples.
        let r = welch(&moments(&B).unwrap(), &moments(&A).unwrap()).unwrap();
        close(r.t, -4.024922359499618, 1e-10);
        close(r.p, t.p, 1e-12);

        let t = welch(&moments(&C).unwrap(), &moments(&D).unwrap()).unwrap();
        close(t.t, 0.014522804212595624, 1e-9);
        close(t.df, 8.894589161499871, 1e-10);
        close(t.p, 0.9887334176135991, 1e-6);
        assert!(!t.significant());
    }

    #[test]
    fn student_matches_scipy() {
        let t = student(&moments(&A).unwrap(), &moments(&B).unwrap()).unwrap();
        close(t.t, 3.9770049091417077, 1e-10);
        assert_eq!(t.df, 11.0);
        close(t.p, 0.0021699083721685363, 1e-6);
    }

    #[test]
    fn critical_values_match_scipy() {
        close(critical_95(5.0), 2.5705818356363146, 1e-8);
        close(critical_95(98.0), 1.9844674545084815, 1e-8);
    }

    #[test]
    fn degenerate_samples_give_clear_answers() {
        let one = moments(&[1.0]).unwrap();
        let two = moments(&[1.0, 2.0]).unwrap();
        assert_eq!(welch(&one, &two), None);
        assert_eq!(student(&two, &one), None);
        let c1 = moments(&[5.0, 5.0, 5.0]).unwrap();
        let c2 = moments(&[6.0, 6.0]).unwrap();
        let t = welch(&c2, &c1).unwrap();
        assert_eq!((t.t, t.p), (f64::INFINITY, 0.0));
        let t = welch(&c1, &c1).unwrap();
        assert_eq!((t.t, t.p), (0.0, 1.0));
        assert!(!t.significant());
    }
}
