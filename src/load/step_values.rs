//! Step values that parse but can never work: caught while loading, with
//! the place they were written, instead of failing on host 312 mid-wave.
//!
//! One case needs the host: an exit code above 255 cannot be seen on a
//! POSIX host (the kernel keeps the low 8 bits: `exit 3010` arrives as
//! 194), yet it is how Windows installers ask for a reboot. The loader
//! refuses it when the step's `os` names a POSIX system; a step without
//! `os` is checked per host by the planner, with [`posix_exit_code_problem`].

use super::diagnostic::{InputError, SourceFile};
use super::playbook::Step;
use super::playbook_doc::StepDoc;

/// The most retries a step may ask for. More is a loop that never ends
/// in practice (with the default 5 s delay, 100 retries is over 8 minutes
/// per host) and is almost always a typo or a wait written as retries.
pub const MAX_RETRIES: u32 = 100;

pub(super) fn check(source: &SourceFile, step: &StepDoc, errors: &mut Vec<InputError>) {
    if let Some(timeout) = &step.timeout
        && timeout.value.0.is_zero()
    {
        errors.push(
            source
                .error_at_location(
                    &timeout.referenced,
                    "`timeout: 0s` would stop the step before it starts",
                )
                .with_help(
                    "give a real limit, e.g. `timeout: 10m`, or leave `timeout` out for none",
                ),
        );
    }
    if let (Some(timeout), Some(wait)) = (&step.timeout, &step.wait)
        && timeout.value < *wait
    {
        // Cut at its timeout, a wait could only ever time out: the step
        // would fail on every host, after waiting for nothing.
        errors.push(
            source
                .error_at_location(
                    &timeout.referenced,
                    format!(
                        "`timeout: {}` is shorter than the `wait: {wait}` it limits, so the step could only time out",
                        timeout.value
                    ),
                )
                .with_help("leave `timeout` out of a `wait` step, or wait less"),
        );
    }
    if let Some(retries) = &step.retries
        && retries.value > MAX_RETRIES
    {
        errors.push(source.error_at_location(
            &retries.referenced,
            format!(
                "`retries: {}` is more than the {MAX_RETRIES} a step may have; to wait for something, use `until` with a `retry_delay`, or a `wait` step",
                retries.value
            ),
        ));
    }
    if let Some(codes) = &step.ok_codes
        && codes.value.is_empty()
    {
        errors.push(
            source
                .error_at_location(
                    &codes.referenced,
                    "`ok_codes: []` accepts no exit code, so the step could never succeed",
                )
                .with_help("list the codes that mean success, e.g. [0], or leave it out for [0]"),
        );
    }
    if let Some(upload) = &step.upload
        && upload.dest.value.trim().is_empty()
    {
        errors.push(source.error_at_location(
            &upload.dest.referenced,
            "an upload with an empty `dest`: say where on the host the file goes",
        ));
    }
    let posix_named = step
        .os
        .as_ref()
        .is_some_and(|oses| oses.0.iter().any(|os| os.is_posix()));
    if posix_named {
        for (field, codes) in [
            ("ok_codes", &step.ok_codes),
            ("reboot_codes", &step.reboot_codes),
        ] {
            if let Some(codes) = codes
                && let Some(code) = beyond_posix(&codes.value)
            {
                errors
                    .push(source.error_at_location(&codes.referenced, posix_message(field, code)));
            }
        }
    }
}

/// The first code no POSIX process can exit with.
fn beyond_posix(codes: &[i32]) -> Option<i32> {
    codes.iter().copied().find(|c| !(0..=255).contains(c))
}

fn posix_message(field: &str, code: i32) -> String {
    format!(
        "{field} has {code}, which a POSIX host can never return: exit codes there are 0 to 255 (exit {code} arrives as {}); limit the step to `os: windows`, or list the code the host really returns",
        code.rem_euclid(256)
    )
}

/// Why `step` cannot work on a POSIX host, if it lists an exit code above
/// 255 (checked by the planner for steps whose `os` the loader did not know).
pub fn posix_exit_code_problem(step: &Step) -> Option<String> {
    [
        ("ok_codes", &step.ok_codes),
        ("reboot_codes", &step.reboot_codes),
    ]
    .into_iter()
    .find_map(|(field, codes)| beyond_posix(codes).map(|code| posix_message(field, code)))
}
