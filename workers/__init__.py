"""The workers that ship with cogoctl, each built on cogoctl.worker."""
