include $(sort $(wildcard $(BR2_EXTERNAL_WATCHGRID_PATH)/package/*/*.mk))
