//! Where a wave is cut.
//!
//! A wave list such as `[1, "10%", "50%", "100%"]` gives the size of each
//! wave, as a count or as a share of the client's hosts (the hosts the plan
//! will run, after selection and OS filtering), like Ansible's `serial`:
//! the first wave is one canary host, the next 10% of the client, and so on.
//! Unlike `serial`, the last size is not repeated: the list must cover the
//! client, and the last wave takes what is left, so `"100%"` at the end
//! means "all the rest". Shares round down but a wave is never empty; a
//! client smaller than the canary simply has fewer waves.
//!
//! Hosts are taken in inventory order, so the operator chooses the canary by
//! listing it first, and the same inventory always gives the same waves.

use crate::load::Size;

/// The sizes of the waves `sizes` cuts a client of `total` hosts into.
pub fn cut(sizes: &[Size], total: usize) -> Result<Vec<usize>, String> {
    let mut waves = Vec::new();
    let mut remaining = total;
    for size in sizes {
        if remaining == 0 {
            break;
        }
        let wanted = size.of(total).max(1);
        let taken = wanted.min(remaining);
        waves.push(taken);
        remaining -= taken;
    }
    if remaining > 0 {
        let list: Vec<String> = sizes.iter().map(|s| s.to_string()).collect();
        return Err(format!(
            "waves [{}] cover {} of this client's {} hosts; end the list with \"100%\" to take the rest",
            list.join(", "),
            total - remaining,
            total
        ));
    }
    Ok(waves)
}

/// How many failed hosts a client tolerates: more than this halts it.
/// A share is of the client's planned hosts and rounds down, so `"5%"` of
/// 30 hosts tolerates 1 failure; `"100%"` tolerates all and never halts.
pub fn allowed_failures(budget: Size, total: usize) -> usize {
    budget.of(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(list: &[&str]) -> Vec<Size> {
        list.iter().map(|s| Size::parse(s).unwrap()).collect()
    }

    #[test]
    fn canary_then_shares() {
        assert_eq!(
            cut(&sizes(&["1", "10%", "50%", "100%"]), 400).unwrap(),
            vec![1, 40, 200, 159]
        );
        assert_eq!(
            cut(&sizes(&["1", "10%", "50%", "100%"]), 40).unwrap(),
            vec![1, 4, 20, 15]
        );
    }

    #[test]
    fn counts() {
        assert_eq!(
            cut(&sizes(&["1", "5", "100%"]), 25).unwrap(),
            vec![1, 5, 19]
        );
        assert_eq!(cut(&sizes(&["2", "3"]), 5).unwrap(), vec![2, 3]);
    }

    #[test]
    fn shares_round_down_but_a_wave_is_never_empty() {
        // 10% of 8 is 0.8: the wave still takes one host.
        assert_eq!(cut(&sizes(&["10%", "100%"]), 8).unwrap(), vec![1, 7]);
        // 50% of 7 is 3.5: three hosts.
        assert_eq!(cut(&sizes(&["50%", "100%"]), 7).unwrap(), vec![3, 4]);
        assert_eq!(
            cut(&sizes(&["33%", "33%", "100%"]), 10).unwrap(),
            vec![3, 3, 4]
        );
    }

    #[test]
    fn a_client_smaller_than_the_canary() {
        assert_eq!(cut(&sizes(&["1", "10%", "100%"]), 1).unwrap(), vec![1]);
        assert_eq!(cut(&sizes(&["5", "100%"]), 3).unwrap(), vec![3]);
        assert_eq!(cut(&sizes(&["1", "5", "100%"]), 4).unwrap(), vec![1, 3]);
    }

    #[test]
    fn a_list_that_cannot_cover_the_client() {
        let err = cut(&sizes(&["1", "5"]), 40).unwrap_err();
        assert!(err.contains("cover 6 of this client's 40 hosts"), "{err}");
        assert!(cut(&sizes(&["10%", "10%"]), 100).is_err());
    }

    #[test]
    fn the_same_input_gives_the_same_waves() {
        let list = sizes(&["1", "10%", "50%", "100%"]);
        for total in 0..200 {
            let a = cut(&list, total).unwrap();
            assert_eq!(a, cut(&list, total).unwrap());
            assert_eq!(
                a.iter().sum::<usize>(),
                total,
                "every host in exactly one wave"
            );
            assert!(a.iter().all(|&w| w > 0));
        }
    }

    #[test]
    fn failure_budgets() {
        assert_eq!(allowed_failures(Size::Count(2), 50), 2);
        assert_eq!(allowed_failures(Size::Percent(5.0), 30), 1);
        assert_eq!(allowed_failures(Size::Percent(5.0), 10), 0);
        assert_eq!(allowed_failures(Size::Percent(100.0), 7), 7);
    }
}
