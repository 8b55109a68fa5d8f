#%Module1.0
## Environment Modules file for a site install of bfjobs (e.g. /opt/apps/modulefiles/bfjobs/0.1).
module-whatis "bfjobs: pull Apptainer images and download models for Blackfish as Slurm jobs"
set root /opt/apps/bfjobs/0.1
prepend-path PATH $root/bin
# setenv BFJOBS_SITE_CONFIG /opt/apps/bfjobs/etc/bfjobs.toml
