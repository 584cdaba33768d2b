"""The course's food catalogue: the dishes the synthetic FoodieQA-format set draws.

Each :class:`Dish` carries the fields FoodieQA's ``food_meta`` has (name, cuisine
= ``food_type``, main ingredients) plus an English name and a short description of what
makes the dish recognisable, which the drawing code (:mod:`helpers.data.synth`) turns into
shapes and colours and the tokenizer and captions reuse as text.

Example:
    >>> from helpers.foods import DISHES, CUISINES
    >>> DISHES[0].name, DISHES[0].cuisine
    ('烤羊肉串', '新疆菜')
    >>> len(CUISINES) >= 8
    True
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Dish:
    """One dish of the catalogue."""

    key: str  # ASCII identifier, used in file names
    name: str  # Chinese dish name (FoodieQA food_name)
    name_en: str  # English dish name
    cuisine: str  # Chinese cuisine name (FoodieQA food_type)
    main_ingredient: tuple  # FoodieQA food_meta.main_ingredient, Chinese
    looks: str  # what a photo of it shows, in Chinese (drawing brief and caption text)


# Chinese cuisine name -> English name, as FoodieQA's choices_en spell them.
CUISINES: dict = {
    "新疆菜": "Xinjiang cuisine",
    "粤菜": "Cantonese cuisine",
    "东北菜": "Northeastern cuisine",
    "川菜": "Sichuan cuisine",
    "京菜": "Beijing cuisine",
    "沪菜": "Shanghai cuisine",
    "浙菜": "Zhejiang cuisine",
    "湘菜": "Hunan cuisine",
    "徽菜": "Anhui cuisine",
    "桂菜": "Guangxi cuisine",
    "滇菜": "Yunnan cuisine",
    "陕西菜": "Shaanxi cuisine",
}

DISHES: tuple = (
    Dish("lamb_skewers", "烤羊肉串", "Lamb skewers", "新疆菜", ("肉", "羊"),
         "几根竹签上串着烤成褐色的羊肉块，撒着红色辣椒面和孜然"),
    Dish("big_plate_chicken", "大盘鸡", "Big plate chicken", "新疆菜", ("肉", "鸡"),
         "大盘里有黄褐色鸡块、土豆块和青椒，下面铺着宽面"),
    Dish("rice_noodle_roll", "肠粉", "Rice noodle rolls", "粤菜", ("米", "虾"),
         "白色半透明的卷状米皮整齐排列，淋着褐色酱油"),
    Dish("har_gow", "虾饺", "Shrimp dumplings", "粤菜", ("虾", "面"),
         "竹蒸笼里几只半透明的月牙形饺子，透出粉红色虾仁"),
    Dish("guo_bao_rou", "锅包肉", "Sweet and sour crispy pork", "东北菜", ("肉", "猪"),
         "金黄色的大片炸肉片，表面有亮晶晶的糖醋汁和胡萝卜丝"),
    Dish("mapo_tofu", "麻婆豆腐", "Mapo tofu", "川菜", ("豆腐", "肉"),
         "红亮的辣油里泡着白色豆腐方块，撒着绿色葱花"),
    Dish("kung_pao_chicken", "宫保鸡丁", "Kung Pao chicken", "川菜", ("肉", "鸡"),
         "小鸡丁、花生米和干红辣椒段炒在一起"),
    Dish("peking_duck", "北京烤鸭", "Peking duck", "京菜", ("肉", "鸭"),
         "枣红色油亮的鸭皮片成薄片码在盘中，旁边有薄饼和葱丝"),
    Dish("zhajiang_noodles", "炸酱面", "Zhajiang noodles", "京菜", ("面", "肉"),
         "碗里一团黄色粗面条，上面一大勺深褐色肉酱和黄瓜丝"),
    Dish("xiaolongbao", "小笼包", "Xiaolongbao", "沪菜", ("面", "肉"),
         "蒸笼里排着白色带褶子的小包子，顶部收口"),
    Dish("west_lake_fish", "西湖醋鱼", "West Lake fish in vinegar", "浙菜", ("鱼",),
         "一整条鱼卧在盘中，浇着深褐色亮汁"),
    Dish("chopped_chili_fish_head", "剁椒鱼头", "Fish head with chopped chili", "湘菜", ("鱼", "辣椒"),
         "大鱼头上盖满鲜红的剁辣椒，撒着葱花"),
    Dish("stinky_mandarin_fish", "臭鳜鱼", "Stinky mandarin fish", "徽菜", ("鱼",),
         "一整条带花刀的鱼，汤汁浓褐，配红椒丝"),
    Dish("luosifen", "螺蛳粉", "Luosifen", "桂菜", ("米粉", "螺"),
         "一碗红油汤里有白色米粉、黄色腐竹、花生和酸笋"),
    Dish("crossing_bridge_noodles", "过桥米线", "Crossing-the-bridge noodles", "滇菜", ("米线", "鸡"),
         "一大碗金黄清汤，旁边一圈小碟装着米线、肉片、鹌鹑蛋和青菜"),
    Dish("yangrou_paomo", "羊肉泡馍", "Pita bread soaked in lamb soup", "陕西菜", ("肉", "羊", "面"),
         "白色浓汤里泡着小块馍和羊肉片，配糖蒜和辣酱"),
)

DISH_BY_NAME: dict = {d.name: d for d in DISHES}

# Where a FoodieQA photo was taken (food_meta.food_location).
LOCATIONS: tuple = ("餐馆", "家里", "食堂", "街边小摊")


def dish(name_or_key: str) -> Dish:
    """Look a dish up by Chinese name or ASCII key.

    Args:
        name_or_key: e.g. "麻婆豆腐" or "mapo_tofu".

    Returns:
        The :class:`Dish`.

    Example:
        >>> dish("mapo_tofu").cuisine
        '川菜'
    """
    for d in DISHES:
        if name_or_key in (d.name, d.key):
            return d
    raise KeyError(f"no dish {name_or_key!r} in helpers.foods.DISHES")
