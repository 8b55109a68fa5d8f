-- Lmod module file for a site install of bfjobs (e.g. /opt/apps/modulefiles/bfjobs/0.1.lua).
-- The venv must be on a filesystem the transfer nodes mount and readable by every user:
-- jobs run the submitting user's interpreter by its absolute path there.
whatis("bfjobs: pull Apptainer images and download models for Blackfish as Slurm jobs")
local root = "/opt/apps/bfjobs/0.1"
prepend_path("PATH", pathJoin(root, "bin"))
-- setenv("BFJOBS_SITE_CONFIG", "/opt/apps/bfjobs/etc/bfjobs.toml")   -- if /etc/bfjobs is not an option
