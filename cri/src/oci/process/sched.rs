//! Scheduling attributes of the container process: process.scheduler
//! (sched_setattr), process.ioPriority (ioprio_set) and linux.personality.

use oci_spec::runtime::{
    IOPriorityClass, LinuxIOPriority, LinuxPersonality, LinuxPersonalityDomain, LinuxSchedulerFlag,
    LinuxSchedulerPolicy, Scheduler,
};

use crate::oci::error::{Result, invalid};

fn policy(policy: LinuxSchedulerPolicy) -> u32 {
    (match policy {
        LinuxSchedulerPolicy::SchedOther => libc::SCHED_OTHER,
        LinuxSchedulerPolicy::SchedFifo => libc::SCHED_FIFO,
        LinuxSchedulerPolicy::SchedRr => libc::SCHED_RR,
        LinuxSchedulerPolicy::SchedBatch => libc::SCHED_BATCH,
        // SCHED_ISO was never merged into Linux; the kernel refuses the number.
        LinuxSchedulerPolicy::SchedIso => 4,
        LinuxSchedulerPolicy::SchedIdle => libc::SCHED_IDLE,
        LinuxSchedulerPolicy::SchedDeadline => 6,
    }) as u32
}

fn flag(flag: &LinuxSchedulerFlag) -> u64 {
    match flag {
        LinuxSchedulerFlag::SchedResetOnFork => 0x01,
        LinuxSchedulerFlag::SchedFlagReclaim => 0x02,
        LinuxSchedulerFlag::SchedFlagDLOverrun => 0x04,
        LinuxSchedulerFlag::SchedFlagKeepPolicy => 0x08,
        LinuxSchedulerFlag::SchedFlagKeepParams => 0x10,
        LinuxSchedulerFlag::SchedFlagUtilClampMin => 0x20,
        LinuxSchedulerFlag::SchedFlagUtilClampMax => 0x40,
    }
}

/// The sched_attr for process.scheduler.
pub fn sched_attr(scheduler: &Scheduler) -> libc::sched_attr {
    libc::sched_attr {
        size: std::mem::size_of::<libc::sched_attr>() as u32,
        sched_policy: policy(*scheduler.policy()),
        sched_flags: scheduler
            .flags()
            .iter()
            .flatten()
            .map(flag)
            .fold(0, |a, b| a | b),
        sched_nice: scheduler.nice().unwrap_or(0),
        sched_priority: scheduler.priority().unwrap_or(0) as u32,
        sched_runtime: scheduler.runtime().unwrap_or(0),
        sched_deadline: scheduler.deadline().unwrap_or(0),
        sched_period: scheduler.period().unwrap_or(0),
    }
}

pub fn set_scheduler(scheduler: &Scheduler) -> Result<()> {
    let attr = sched_attr(scheduler);
    // SAFETY: sched_setattr reads `attr.size` bytes of the struct we pass.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_sched_setattr,
            0,
            &attr as *const libc::sched_attr,
            0,
        )
    };
    if rc != 0 {
        return Err(invalid(
            "process.scheduler",
            std::io::Error::last_os_error().to_string(),
        ));
    }
    Ok(())
}

/// ioprio value: class in the top 3 of 16 bits, priority (0-7) below.
pub fn ioprio_value(priority: &LinuxIOPriority) -> Result<i32> {
    let class = match priority.class() {
        IOPriorityClass::IoprioClassRt => 1,
        IOPriorityClass::IoprioClassBe => 2,
        IOPriorityClass::IoprioClassIdle => 3,
    };
    let level = priority.priority();
    if !(0..=7).contains(&level) {
        return Err(invalid(
            "process.ioPriority.priority",
            format!("{level} is not in 0..7"),
        ));
    }
    Ok((class << 13) | level as i32)
}

pub fn set_io_priority(priority: &LinuxIOPriority) -> Result<()> {
    const IOPRIO_WHO_PROCESS: i32 = 1;
    let value = ioprio_value(priority)?;
    // SAFETY: plain syscall on integers.
    let rc = unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, value) };
    if rc != 0 {
        return Err(invalid(
            "process.ioPriority",
            std::io::Error::last_os_error().to_string(),
        ));
    }
    Ok(())
}

pub fn set_personality(personality: &LinuxPersonality) -> Result<()> {
    const PER_LINUX: libc::c_ulong = 0x0000;
    const PER_LINUX32: libc::c_ulong = 0x0008;
    let domain = match personality.domain() {
        LinuxPersonalityDomain::PerLinux => PER_LINUX,
        LinuxPersonalityDomain::PerLinux32 => PER_LINUX32,
    };
    if personality.flags().as_ref().is_some_and(|f| !f.is_empty()) {
        tracing::warn!("linux.personality.flags are not supported and ignored");
    }
    // SAFETY: personality takes a plain integer.
    if unsafe { libc::personality(domain) } < 0 {
        return Err(invalid(
            "linux.personality",
            std::io::Error::last_os_error().to_string(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_priority_packs_class_and_level() {
        let p: LinuxIOPriority =
            serde_json::from_str(r#"{"class":"IOPRIO_CLASS_BE","priority":4}"#).unwrap();
        assert_eq!(ioprio_value(&p).unwrap(), (2 << 13) | 4);
        let bad: LinuxIOPriority =
            serde_json::from_str(r#"{"class":"IOPRIO_CLASS_RT","priority":9}"#).unwrap();
        assert!(
            ioprio_value(&bad)
                .unwrap_err()
                .to_string()
                .starts_with("process.ioPriority.priority")
        );
    }

    #[test]
    fn scheduler_maps_policy_nice_and_flags() {
        let s: Scheduler = serde_json::from_str(
            r#"{"policy":"SCHED_BATCH","nice":5,"flags":["SCHED_RESET_ON_FORK"]}"#,
        )
        .unwrap();
        let attr = sched_attr(&s);
        assert_eq!(attr.sched_policy, libc::SCHED_BATCH as u32);
        assert_eq!(attr.sched_nice, 5);
        assert_eq!(attr.sched_flags, 1);
    }
}
