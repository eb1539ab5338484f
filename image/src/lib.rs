//! ghost-image: turns the kernel, its modules, the ghostos binaries and the `initramfs/`
//! tree into a reproducible initramfs, a unified kernel image and a bootable GPT disk.

pub mod command;
pub mod cpio;
pub mod disk;
pub mod ext4;
pub mod fat;
pub mod gpt;
pub mod initramfs;
pub mod kernel;
pub mod libs;
pub mod modules;
pub mod pipeline;
pub mod uki;
